"""Ingest a letterboxd export into the object store as an immutable, validated snapshot.

Layout written (``<store>`` is the data store):

- ``posters/sha256/<aa>/<sha256>``: valid posters, content-addressed and shared by all snapshots, so re-ingesting
  a mostly unchanged export uploads only the new posters and an unchanged one uploads no poster bytes.
- ``quarantine/sha256/<aa>/<sha256>``: the bytes of rejected poster files (nothing is lost; files over the size
  cap are recorded with their size instead, and links are never read).
- ``snapshots/<id>/genres.csv`` (clean ``movie_id,genre`` rows of usable movies), ``posters.csv`` (movie id ->
  blob), ``quarantine.json`` (every rejected row, poster and movie with its reason), and ``manifest.json``,
  written last: a snapshot exists only once its manifest does (the commit marker).

Every snapshot file is written create-only, in one order, and a writer goes on only while what it finds equals
what it would write; so under any interleaving of ingests of one id exactly one content gets published, and
nobody's files replace anybody's. Readers check each file against the hashes in the manifest.
"""

from __future__ import annotations

import io
import re
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

import postergenre
from postergenre.cleanup import sweep_work_dirs, terminate_raises
from postergenre.limits import Limits
from postergenre.log import get_logger
from postergenre.poster_scan import PosterFile, list_poster_files, scan_posters, upload_posters
from postergenre.progress import Progress
from postergenre.snapshot_content import (
    DATA_FILES,
    SnapshotContent,
    build_content,
    genre_counts,
    json_bytes,
    refuse_empty,
    rows_by_movie,
)
from postergenre.sources import open_source, read_genres_csv
from postergenre.storage import NotFound, ObjectStore, PreconditionFailed, StoreError
from postergenre.validation import PosterCheck, SourceError, parse_genres_csv, sha256_bytes

__all__ = [
    "POSTER_PREFIX",
    "QUARANTINE_PREFIX",
    "SnapshotConflict",
    "SnapshotCorrupt",
    "SourceError",
    "genre_counts",
    "ingest",
    "list_snapshots",
    "load_manifest",
    "load_posters",
    "load_rows",
    "read_snapshot_file",
]

log = get_logger(__name__)

POSTER_PREFIX = "posters/sha256"
QUARANTINE_PREFIX = "quarantine/sha256"
_SNAPSHOT_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
DEFAULT_STALE_SECONDS = 3600.0


class SnapshotConflict(ValueError):
    """A published snapshot is immutable: the id exists with different content."""


class SnapshotCorrupt(StoreError):
    """A published snapshot file no longer matches the hash its manifest recorded."""


def blob_key(prefix: str, digest: str) -> str:
    return f"{prefix}/{digest[:2]}/{digest}"


def snapshot_key(snapshot_id: str, name: str = "") -> str:
    return f"snapshots/{snapshot_id}/{name}" if name else f"snapshots/{snapshot_id}"


def validate_snapshot_id(snapshot_id: str) -> str:
    if not _SNAPSHOT_ID_RE.fullmatch(snapshot_id) or ".." in snapshot_id:
        raise ValueError(
            f"invalid snapshot id {snapshot_id[:80]!r}: use letters, digits, '.', '_' or '-' (max 64)"
        )
    return snapshot_id


def default_snapshot_id(now: datetime | None = None) -> str:
    return (now or datetime.now(UTC)).strftime("%Y-%m-%d")


# --------------------------------------------------------------------------------------------- ingest


def _existing_blobs(store: ObjectStore, prefix: str) -> set[str]:
    return {key.rsplit("/", 1)[-1] for key in store.list_keys(prefix + "/")}


def sweep_stale(store: ObjectStore, snapshot_id: str, older_than: float) -> None:
    """Remove what killed ingests left behind: work folders in the temp dir, the store's half-written
    temporaries, and the files of this snapshot id if it was never published and nobody touched them since."""
    sweep_work_dirs(older_than)
    for prefix in ("posters/", "quarantine/", "snapshots/"):
        store.sweep_temporaries(prefix, older_than)
    prefix = snapshot_key(snapshot_id) + "/"
    infos = list(store.list(prefix))
    cutoff = time.time() - older_than
    stale = all(info.modified is not None and info.modified < cutoff for info in infos)
    if infos and stale and not any(info.key.endswith("/manifest.json") for info in infos):
        log.warning("sweeping an unpublished snapshot", snapshot_id=snapshot_id, files=len(infos))
        for info in infos:
            store.delete(info.key)


def ingest(
    source: str,
    store: ObjectStore,
    *,
    snapshot_id: str | None = None,
    progress: Progress | None = None,
    concurrency: int = 32,
    limits: Limits | None = None,
    stale_after: float = DEFAULT_STALE_SECONDS,
) -> dict:
    """Validate ``source`` and publish it as snapshot ``snapshot_id`` (default: today's date, UTC).

    Idempotent: ingesting the same content under the same id again returns ``status: "unchanged"`` and uploads
    nothing; different content under a published id raises :class:`SnapshotConflict` before anything is
    uploaded. SIGTERM unwinds (work folders are removed); leftovers of killed runs are swept at the next one.
    """
    progress = progress or Progress()
    limits = limits or Limits()
    snapshot_id = validate_snapshot_id(default_snapshot_id() if snapshot_id is None else snapshot_id)
    started = time.perf_counter()
    store.check()
    with terminate_raises():
        sweep_stale(store, snapshot_id, stale_after)
        with open_source(source, limits=limits, concurrency=concurrency) as (root, source_rejected):
            return _ingest_folder(
                root, source, store, snapshot_id, source_rejected, progress, concurrency, limits, started
            )


def _early_publisher(store: ObjectStore, genres_of: dict[int, list[str]], published: dict[str, int]):
    """Store each valid poster of a movie with genre rows while the checks still hold its bytes, once per digest.

    Blobs are immutable and content-addressed, so storing one before the snapshot is published (or even if
    publishing then fails) never changes what any snapshot means.
    """
    lock = threading.Lock()

    def publish(poster: PosterFile, check: PosterCheck, data: bytes) -> None:
        if poster.movie_id not in genres_of:
            return
        with lock:
            if check.sha256 in published:
                return
            published[check.sha256] = check.size
        store.put_bytes(blob_key(POSTER_PREFIX, check.sha256), data)

    return publish


def _ingest_folder(
    root: Path,
    source: str,
    store: ObjectStore,
    snapshot_id: str,
    source_rejected: list,
    progress: Progress,
    concurrency: int,
    limits: Limits,
    started: float,
) -> dict:
    parsed = parse_genres_csv(read_genres_csv(root, limits))
    refuse_empty(parsed)
    files, name_rejected = list_poster_files(root, limits)
    known_valid = _existing_blobs(store, POSTER_PREFIX)
    # An id with anything under it (published, or being published) may refuse this content: then check every
    # poster first and upload nothing until the content is known to be the one to publish.
    begun = next(iter(store.list_keys(snapshot_key(snapshot_id) + "/")), None) is not None
    published: dict[str, int] = {}
    on_valid = None if begun else _early_publisher(store, rows_by_movie(parsed), published)
    workers = max(4, concurrency)
    with progress.task("checking posters", len(files)) as advance:
        checks = scan_posters(files, known_valid, limits, on_valid=on_valid, workers=workers, advance=advance)
    content = build_content(parsed, files, checks, source_rejected + name_rejected)
    refuse_empty(parsed, content)

    manifest_key = snapshot_key(snapshot_id, "manifest.json")
    existing = _read_manifest(store, manifest_key)
    if existing is not None:
        return _unchanged_or_conflict(existing, content.content_hash, snapshot_id, started)
    _refuse_different_leftovers(store, snapshot_id, content)

    transfer = _missing_blobs(store, content, known_valid | set(published))
    with progress.task(
        "uploading posters and quarantined files", sum(p.size for p, _, _ in transfer)
    ) as advance:
        uploaded_bytes = upload_posters(transfer, store.put_bytes, limits, workers=workers, advance=advance)
    uploaded_bytes += sum(published.values())

    manifest = _manifest(snapshot_id, source, content)
    for name in DATA_FILES:
        _put_create_only(store, snapshot_id, name, content.files[name])
    try:
        store.put_if(manifest_key, json_bytes(manifest), if_match=None)
    except PreconditionFailed:  # a concurrent ingest of the same content published first
        return _unchanged_or_conflict(
            _read_manifest(store, manifest_key), content.content_hash, snapshot_id, started
        )
    result = _result(
        manifest,
        "published",
        started,
        uploaded=len(transfer) + len(published),
        uploaded_bytes=uploaded_bytes,
        quarantine=content.quarantine_counts,
        store_url=store.url,
    )
    log.info("snapshot published", **{k: v for k, v in result.items() if k != "quarantine"})
    return result


def _missing_blobs(
    store: ObjectStore, content: SnapshotContent, known_valid: set[str]
) -> list[tuple[PosterFile, str, str]]:
    """(file, key, sha256) of every usable poster and kept quarantined file the store does not hold yet."""
    transfer = [
        (p, blob_key(POSTER_PREFIX, d), d) for d, p in content.uploads.items() if d not in known_valid
    ]
    if content.quarantined_blobs:
        stored = _existing_blobs(store, QUARANTINE_PREFIX)
        transfer += [
            (p, blob_key(QUARANTINE_PREFIX, d), d)
            for d, p in content.quarantined_blobs.items()
            if d not in stored
        ]
    return transfer


def _manifest(snapshot_id: str, source: str, content: SnapshotContent) -> dict:
    frame = pd.DataFrame(content.clean, columns=["movie_id", "genre"])
    return {
        "snapshot_id": snapshot_id,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "source": source,
        "code_version": postergenre.__version__,
        "content_hash": content.content_hash,
        "counts": content.counts,
        "genres": genre_counts(frame),
        "files": {
            name: {"sha256": sha256_bytes(data), "bytes": len(data)} for name, data in content.files.items()
        },
        "poster_prefix": POSTER_PREFIX,
    }


def _conflict(snapshot_id: str, name: str) -> SnapshotConflict:
    return SnapshotConflict(
        f"snapshot {snapshot_id} holds a different {name}, from a concurrent ingest or an interrupted one "
        f"that was never published; ingest under a new --snapshot id (or retry once it is swept)"
    )


def _refuse_different_leftovers(store: ObjectStore, snapshot_id: str, content: SnapshotContent) -> None:
    """Refuse before uploading anything if the id already holds other files than this content's."""
    for name in DATA_FILES:
        try:
            found = store.get_bytes(snapshot_key(snapshot_id, name))
        except NotFound:
            continue
        if found != content.files[name]:
            raise _conflict(snapshot_id, name)


def _put_create_only(store: ObjectStore, snapshot_id: str, name: str, data: bytes) -> None:
    """Write one snapshot file only if absent; an existing one must hold exactly ``data``.

    An equal file (a concurrent ingest of the same content, or a killed one being resumed) is rewritten in
    place by compare-and-swap, which refreshes its age so the stale sweep leaves it to this publisher.
    """
    key = snapshot_key(snapshot_id, name)
    try:
        store.put_if(key, data, if_match=None)
        return
    except PreconditionFailed:
        pass
    try:
        found, etag = store.get_with_etag(key)
    except NotFound as err:  # swept between the two calls: never publish over a hole
        raise _conflict(snapshot_id, name) from err
    if found != data:
        raise _conflict(snapshot_id, name)
    try:
        store.put_if(key, data, if_match=etag)
    except PreconditionFailed:
        if store.get_bytes(key) != data:
            raise _conflict(snapshot_id, name) from None


def _read_manifest(store: ObjectStore, key: str) -> dict | None:
    try:
        return store.get_json(key)
    except NotFound:
        return None


def _unchanged_or_conflict(manifest: dict, content_hash: str, snapshot_id: str, started: float) -> dict:
    if manifest["content_hash"] != content_hash:
        raise SnapshotConflict(
            f"snapshot {snapshot_id} is already published with different content "
            f"({manifest['content_hash'][:12]} != {content_hash[:12]}); ingest under a new --snapshot id"
        )
    return _result(
        manifest, "unchanged", started, uploaded=0, uploaded_bytes=0, quarantine=None, store_url=None
    )


def _result(
    manifest: dict,
    status: str,
    started: float,
    *,
    uploaded: int,
    uploaded_bytes: int,
    quarantine: dict | None,
    store_url: str | None,
) -> dict:
    result = {
        "snapshot_id": manifest["snapshot_id"],
        "status": status,
        "content_hash": manifest["content_hash"],
        **manifest["counts"],
        "uploaded_posters": uploaded,
        "uploaded_bytes": uploaded_bytes,
        "seconds": round(time.perf_counter() - started, 3),
    }
    if quarantine is not None:
        result["quarantine"] = quarantine
    if store_url:
        result["manifest_uri"] = (
            f"{store_url.rstrip('/')}/{snapshot_key(manifest['snapshot_id'], 'manifest.json')}"
        )
    return result


def load_manifest(store: ObjectStore, snapshot_id: str) -> dict:
    """The published manifest of ``snapshot_id``; a clear error if it was never (completely) published."""
    manifest = _read_manifest(store, snapshot_key(validate_snapshot_id(snapshot_id), "manifest.json"))
    if manifest is None:
        raise NotFound(f"snapshot {snapshot_id} is not published in {store.url}")
    return manifest


def read_snapshot_file(
    store: ObjectStore, snapshot_id: str, name: str, manifest: dict | None = None
) -> bytes:
    """The bytes of one published snapshot file, checked against the hash its manifest recorded."""
    manifest = manifest or load_manifest(store, snapshot_id)
    expected = manifest.get("files", {}).get(name)
    if expected is None:
        raise SnapshotCorrupt(f"snapshot {snapshot_id}: its manifest lists no {name}")
    try:
        data = store.get_bytes(snapshot_key(snapshot_id, name))
    except NotFound:
        raise SnapshotCorrupt(f"snapshot {snapshot_id}: {name} is missing from {store.url}") from None
    digest = sha256_bytes(data)
    if digest != expected["sha256"]:
        raise SnapshotCorrupt(
            f"snapshot {snapshot_id}: {name} does not match its manifest (sha256 {digest[:12]} != "
            f"{expected['sha256'][:12]}); it was changed after publishing"
        )
    return data


def load_rows(store: ObjectStore, snapshot_id: str) -> pd.DataFrame:
    """The snapshot's clean ``movie_id, genre`` rows (usable movies only)."""
    data = read_snapshot_file(store, snapshot_id, "genres.csv")
    return pd.read_csv(io.BytesIO(data), dtype={"movie_id": "int64", "genre": "string"}, engine="pyarrow")


def load_posters(store: ObjectStore, snapshot_id: str) -> pd.DataFrame:
    """The snapshot's poster index: ``movie_id, sha256, bytes, format`` of every usable movie."""
    return pd.read_csv(io.BytesIO(read_snapshot_file(store, snapshot_id, "posters.csv")))


def load_quarantine(store: ObjectStore, snapshot_id: str) -> dict:
    """The snapshot's quarantine report: counts per reason and every rejected item."""
    import json

    return json.loads(read_snapshot_file(store, snapshot_id, "quarantine.json"))


def list_snapshots(store: ObjectStore) -> list[str]:
    """Ids of published snapshots (those with a manifest), sorted."""
    return sorted(
        key.split("/")[1] for key in store.list_keys("snapshots/") if key.endswith("/manifest.json")
    )

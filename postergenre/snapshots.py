"""Ingest a letterboxd export into the object store as an immutable, validated snapshot.

Layout written (``<store>`` is the data store):

- ``posters/sha256/<aa>/<sha256>``: valid posters, content-addressed and shared by all snapshots, so re-ingesting
  a mostly unchanged export uploads only the new posters and an unchanged one uploads no poster bytes.
- ``quarantine/sha256/<aa>/<sha256>``: the bytes of rejected poster files (nothing is lost).
- ``snapshots/<id>/genres.csv`` (clean ``movie_id,genre`` rows of usable movies), ``posters.csv`` (movie id ->
  blob), ``quarantine.json`` (every rejected row, poster and movie with its reason), and ``manifest.json``,
  written last: a snapshot exists only once its manifest does (the commit marker).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import re
import shutil
import tarfile
import tempfile
import threading
import time
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path, PurePosixPath
from typing import IO

import pandas as pd

import postergenre
from postergenre.genres import GENRES
from postergenre.labels import collapse
from postergenre.log import get_logger
from postergenre.progress import Progress
from postergenre.storage import NotFound, ObjectStore, PreconditionFailed, open_store
from postergenre.validation import (
    ExportError,
    PosterCheck,
    Rejected,
    check_poster,
    parse_genres_csv,
    poster_id_from_name,
    sha256_bytes,
)

log = get_logger(__name__)

POSTER_PREFIX = "posters/sha256"
QUARANTINE_PREFIX = "quarantine/sha256"
_SNAPSHOT_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class SourceError(ExportError):
    """The source export is missing, unreadable or of an unknown kind."""


class SnapshotConflict(ValueError):
    """A published snapshot is immutable: the id exists with different content."""


def blob_key(prefix: str, digest: str) -> str:
    return f"{prefix}/{digest[:2]}/{digest}"


def snapshot_key(snapshot_id: str, name: str = "") -> str:
    return f"snapshots/{snapshot_id}/{name}" if name else f"snapshots/{snapshot_id}"


def validate_snapshot_id(snapshot_id: str) -> str:
    if not _SNAPSHOT_ID_RE.fullmatch(snapshot_id) or ".." in snapshot_id:
        raise ValueError(
            f"invalid snapshot id {snapshot_id!r}: use letters, digits, '.', '_' or '-' (max 64)"
        )
    return snapshot_id


def default_snapshot_id(now: datetime | None = None) -> str:
    return (now or datetime.now(UTC)).strftime("%Y-%m-%d")


# --------------------------------------------------------------------------------------------- sources


def _is_safe_member(name: str) -> bool:
    path = PurePosixPath(name.replace("\\", "/"))
    return not path.is_absolute() and ".." not in path.parts and ":" not in name


def _archive_members(
    archive: Path, stack: contextlib.ExitStack
) -> Iterator[tuple[str, Callable[[], IO[bytes]]]]:
    """(name, opener) of every regular file in a .zip or a tar archive (any compression)."""
    if zipfile.is_zipfile(archive):
        zf = stack.enter_context(zipfile.ZipFile(archive))
        return ((i.filename, partial(zf.open, i)) for i in zf.infolist() if not i.is_dir())
    tf = stack.enter_context(tarfile.open(archive))  # noqa: SIM115 (the caller's stack closes it)
    return ((m.name, partial(tf.extractfile, m)) for m in tf.getmembers() if m.isfile())


def _extract_archive(archive: Path, dest: Path) -> list[Rejected]:
    """Extract regular files with safe relative names; unsafe members are reported, never written."""
    rejected: list[Rejected] = []
    try:
        with contextlib.ExitStack() as stack:
            for name, open_member in _archive_members(archive, stack):
                if not _is_safe_member(name):
                    rejected.append(Rejected("unsafe_archive_path", "path escapes the archive", name=name))
                    continue
                target = dest / name
                target.parent.mkdir(parents=True, exist_ok=True)
                with open_member() as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out)
    except tarfile.TarError as exc:
        raise SourceError(f"{archive}: not a readable .zip or .tar.gz archive ({exc})") from None
    return rejected
    try:
        with tarfile.open(archive) as tf:
            for member in tf.getmembers():
                if not member.isfile():
                    continue
                if not _is_safe_member(member.name):
                    rejected.append(
                        Rejected("unsafe_archive_path", "path escapes the archive", name=member.name)
                    )
                    continue
                target = dest / member.name
                target.parent.mkdir(parents=True, exist_ok=True)
                with tf.extractfile(member) as src, open(target, "wb") as out:  # type: ignore[union-attr]
                    shutil.copyfileobj(src, out)
    except tarfile.TarError as exc:
        raise SourceError(f"{archive}: not a readable .zip or .tar.gz archive ({exc})") from None
    return rejected


def _download_s3_export(source: str, dest: Path, concurrency: int) -> list[Rejected]:
    store = open_store(source, concurrency=concurrency)
    store.check()
    if not store.exists("genres.csv"):
        raise SourceError(f"{source}: no genres.csv under this prefix")
    items = [("genres.csv", dest / "genres.csv")]
    rejected: list[Rejected] = []
    for key in store.list_keys("posters/"):
        name = key.removeprefix("posters/")
        if "/" in name or poster_id_from_name(name) is None:
            rejected.append(Rejected("bad_poster_name", "not <digits>.jpg/.png", name=key))
            continue
        items.append((key, dest / "posters" / name))
    store.download_files(items)
    return rejected


@contextmanager
def open_source(source: str, *, concurrency: int = 32) -> Iterator[tuple[Path, list[Rejected]]]:
    """Yield a local folder holding ``genres.csv`` (and usually ``posters/``) for any kind of source."""
    if source.startswith("s3://"):
        with tempfile.TemporaryDirectory(prefix="postergenre-src-") as tmp:
            rejected = _download_s3_export(source, Path(tmp), concurrency)
            yield Path(tmp), rejected
        return
    path = Path(source.removeprefix("file://")).expanduser()
    if not path.exists():
        raise SourceError(f"source {source} does not exist")
    if path.is_dir():
        yield _export_root(path), []
        return
    if path.suffix == ".zip" or path.name.endswith((".tar.gz", ".tgz", ".tar")):
        with tempfile.TemporaryDirectory(prefix="postergenre-src-") as tmp:
            rejected = _extract_archive(path, Path(tmp))
            yield _export_root(Path(tmp)), rejected
        return
    raise SourceError(f"source {source}: expected a folder, a .zip/.tar.gz export or an s3:// prefix")


def _export_root(folder: Path) -> Path:
    """The folder holding genres.csv: the folder itself or its shallowest descendant (archives nest one level)."""
    if (folder / "genres.csv").is_file():
        return folder
    found = sorted(folder.rglob("genres.csv"), key=lambda p: (len(p.parts), str(p)))
    if not found:
        raise SourceError(f"{folder}: no genres.csv in the export")
    return found[0].parent


# --------------------------------------------------------------------------------------------- ingest


@dataclass(frozen=True)
class PosterFile:
    name: str
    path: Path
    movie_id: int | None


def _list_poster_files(root: Path) -> tuple[list[PosterFile], list[Rejected]]:
    folder = root / "posters"
    files: list[PosterFile] = []
    rejected: list[Rejected] = []
    if not folder.is_dir():
        return files, rejected
    for path in sorted(folder.rglob("*")):
        if path.is_dir():
            continue
        name = path.relative_to(folder).as_posix()
        movie_id = poster_id_from_name(name)
        if movie_id is None or path.is_symlink():
            rejected.append(Rejected("bad_poster_name", "not <digits>.jpg/.png (or a symlink)", name=name))
        files.append(PosterFile(name, path, movie_id))
    return files, rejected


def _check_files(
    files: list[PosterFile],
    known_valid: set[str],
    advance,
    publish: Callable[[PosterFile, PosterCheck, bytes], bool],
    workers: int,
) -> tuple[list[PosterCheck], list[str]]:
    """Check every poster and hand each valid, not-yet-stored one to ``publish`` while its bytes are in memory.

    Checking and uploading overlap on one thread pool (PIL decoding, hashing and socket I/O release the GIL), so
    an ingest costs about its upload time. Returns the checks in input order and the digests ``publish`` stored.
    """
    published: list[str] = []

    def one(poster: PosterFile) -> PosterCheck:
        data = poster.path.read_bytes()
        digest = sha256_bytes(data)
        check = check_poster(data, digest=digest, decode=digest not in known_valid)
        if check.reason is None and digest not in known_valid and publish(poster, check, data):
            published.append(digest)
        advance(1)
        return check

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(one, files)), published


def _existing_blobs(store: ObjectStore, prefix: str) -> set[str]:
    return {key.rsplit("/", 1)[-1] for key in store.list_keys(prefix + "/")}


def _csv_bytes(header: list[str], rows: list[tuple]) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue().encode()


def _json_bytes(obj) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n").encode()


def genre_counts(rows: pd.DataFrame) -> dict[str, dict[str, int]]:
    """Per-genre counts: ``raw`` = (movie, genre) rows, ``collapsed`` = movies after the least-common collapse."""
    raw = rows["genre"].value_counts()
    collapsed = collapse(rows)["genre"].value_counts() if len(rows) else pd.Series(dtype=int)
    return {
        "raw": {g: int(raw.get(g, 0)) for g in GENRES},
        "collapsed": {g: int(collapsed.get(g, 0)) for g in GENRES},
    }


def ingest(
    source: str,
    store: ObjectStore,
    *,
    snapshot_id: str | None = None,
    progress: Progress | None = None,
    concurrency: int = 32,
) -> dict:
    """Validate ``source`` and publish it as snapshot ``snapshot_id`` (default: today's date, UTC).

    Idempotent: ingesting the same content under the same id again returns ``status: "unchanged"`` and uploads
    nothing; different content under a published id raises :class:`SnapshotConflict`.
    """
    progress = progress or Progress()
    snapshot_id = validate_snapshot_id(default_snapshot_id() if snapshot_id is None else snapshot_id)
    started = time.perf_counter()
    store.check()

    with open_source(source, concurrency=concurrency) as (root, source_rejected):
        parsed = parse_genres_csv((root / "genres.csv").read_bytes())
        files, name_rejected = _list_poster_files(root)
        files = [f for f in files if f.movie_id is not None]
        known_valid = _existing_blobs(store, POSTER_PREFIX)
        rows_by_movie: dict[int, list[str]] = {}
        for movie_id, genre in parsed.rows:
            rows_by_movie.setdefault(movie_id, []).append(genre)
        claimed: set[str] = set()
        claim_lock = threading.Lock()

        def publish(poster: PosterFile, check: PosterCheck, data: bytes) -> bool:
            """Store a valid poster of a movie with genre rows under its content hash, once per digest.

            Blobs are immutable and content-addressed, so storing one before the snapshot is published (or even
            if publishing then fails) never changes what any snapshot means.
            """
            if poster.movie_id not in rows_by_movie:
                return False
            with claim_lock:
                if check.sha256 in claimed:
                    return False
                claimed.add(check.sha256)
            store.put_bytes(blob_key(POSTER_PREFIX, check.sha256), data)
            return True

        with progress.task("checking and uploading posters", len(files)) as advance:
            checks, published = _check_files(files, known_valid, advance, publish, max(4, concurrency))
        known_valid |= set(published)
        quarantine = parsed.rejected + source_rejected + name_rejected

        posters: dict[int, PosterCheck] = {}
        uploads: dict[str, Path] = {}
        quarantined_blobs: dict[str, Path] = {}
        for poster, check in zip(files, checks, strict=True):
            reason, detail = check.reason, check.detail
            if reason is None and poster.movie_id in posters:
                reason, detail = "duplicate_poster", f"movie {poster.movie_id} already has a poster"
            elif reason is None and poster.movie_id not in rows_by_movie:
                reason, detail = "poster_without_genres", "no valid genre row for this id"
            if reason is None:
                posters[poster.movie_id] = check
                uploads[check.sha256] = poster.path
                continue
            quarantine.append(
                Rejected(
                    reason,
                    detail or "",
                    movie_id=poster.movie_id,
                    name=poster.name,
                    sha256=check.sha256 if check.size else None,
                )
            )
            if check.size:
                quarantined_blobs[check.sha256] = poster.path

        for movie_id in sorted(set(rows_by_movie) - set(posters)):
            quarantine.append(
                Rejected(
                    "no_valid_poster",
                    f"rows kept out: {', '.join(rows_by_movie[movie_id])}",
                    movie_id=movie_id,
                )
            )

        clean = sorted((m, g) for m, genres in rows_by_movie.items() if m in posters for g in genres)
        genres_csv = _csv_bytes(["movie_id", "genre"], clean)
        posters_csv = _csv_bytes(
            ["movie_id", "sha256", "bytes", "format"],
            [(m, c.sha256, c.size, c.format) for m, c in sorted(posters.items())],
        )
        quarantine_doc = {
            "counts": dict(sorted(Counter(r.reason for r in quarantine).items())),
            "blank_lines": parsed.blank_lines,
            "items": [r.to_dict() for r in quarantine],
        }
        quarantine_json = _json_bytes(quarantine_doc)
        content_hash = sha256_bytes(genres_csv + posters_csv + quarantine_json)

        manifest_key = snapshot_key(snapshot_id, "manifest.json")
        existing = _read_manifest(store, manifest_key)
        if existing is not None:
            return _unchanged_or_conflict(existing, content_hash, snapshot_id, started)

        missing = {d: p for d, p in uploads.items() if d not in known_valid}
        missing_q = {
            d: p for d, p in quarantined_blobs.items() if d not in _existing_blobs(store, QUARANTINE_PREFIX)
        }
        transfer = [(p, blob_key(POSTER_PREFIX, d)) for d, p in missing.items()]
        transfer += [(p, blob_key(QUARANTINE_PREFIX, d)) for d, p in missing_q.items()]
        with progress.task(
            "uploading quarantined files", sum(p.stat().st_size for p, _ in transfer)
        ) as advance:
            uploaded_bytes = store.upload_files(transfer, progress=advance) if transfer else 0
        sizes = {check.sha256: check.size for check in checks}
        uploaded_bytes += sum(sizes[digest] for digest in published)

    frame = pd.DataFrame(clean, columns=["movie_id", "genre"])
    files_meta = {}
    for name, data in (
        ("genres.csv", genres_csv),
        ("posters.csv", posters_csv),
        ("quarantine.json", quarantine_json),
    ):
        store.put_bytes(snapshot_key(snapshot_id, name), data)
        files_meta[name] = {"sha256": sha256_bytes(data), "bytes": len(data)}
    manifest = {
        "snapshot_id": snapshot_id,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "source": source,
        "code_version": postergenre.__version__,
        "content_hash": content_hash,
        "counts": {
            "movies": len(posters),
            "rows": len(clean),
            "posters": len(posters),
            "input_rows": len(parsed.rows) + len(parsed.rejected),
            "blank_lines": parsed.blank_lines,
            "quarantined": len(quarantine),
        },
        "genres": genre_counts(frame),
        "files": files_meta,
        "poster_prefix": POSTER_PREFIX,
    }
    try:
        store.put_if(manifest_key, _json_bytes(manifest), if_match=None)
    except PreconditionFailed:  # a concurrent ingest of the same id published first
        return _unchanged_or_conflict(_read_manifest(store, manifest_key), content_hash, snapshot_id, started)
    result = _result(
        manifest,
        "published",
        started,
        uploaded=len(transfer) + len(published),
        uploaded_bytes=uploaded_bytes,
        quarantine=quarantine_doc["counts"],
        store_url=store.url,
    )
    log.info("snapshot published", **{k: v for k, v in result.items() if k != "quarantine"})
    return result


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


def load_rows(store: ObjectStore, snapshot_id: str) -> pd.DataFrame:
    """The snapshot's clean ``movie_id, genre`` rows (usable movies only)."""
    load_manifest(store, snapshot_id)
    data = store.get_bytes(snapshot_key(snapshot_id, "genres.csv"))
    return pd.read_csv(io.BytesIO(data), dtype={"movie_id": "int64", "genre": "string"}, engine="pyarrow")


def list_snapshots(store: ObjectStore) -> list[str]:
    """Ids of published snapshots (those with a manifest), sorted."""
    return sorted(
        key.split("/")[1] for key in store.list_keys("snapshots/") if key.endswith("/manifest.json")
    )

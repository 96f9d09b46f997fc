"""Model registry in an object store: immutable versions, a champion pointer per model, an alias log.

Layout (keys relative to the registry store)::

    models/<name>/versions/<version>/claim.json      content digest, written create-only first
    models/<name>/versions/<version>/<files...>      e.g. model.keras
    models/<name>/versions/<version>/metrics.json
    models/<name>/versions/<version>/decision.json   only when a decision was given
    models/<name>/versions/<version>/lineage.json    manifest + caller lineage; the commit marker, last
    models/<name>/champion.json                      pointer: version, generation, since, entry
    models/<name>/aliases/<generation:08d>.json      one immutable alias-log entry per champion move

Names. A model name is '/'-separated segments, each stored as an ASCII slug (lower case, runs of
anything but [a-z0-9] become '-'): ``genre-ova/Science Fiction`` is stored as ``genre-ova/science-fiction``,
``TV Movie`` as ``tv-movie``. Every function accepts either spelling; the spelling given at registration is
kept as ``display_name`` in lineage.json. Slugs are injective over the 19 genres. ``versions`` and
``aliases`` are reserved segments, so a name can never collide with the layout.

Versions. A version is visible only once lineage.json exists (written last), so a half-written version is
never listed, shown or promotable. Before any file is written, ``claim.json`` (create-only) records the digest
of the whole content; a second writer with different content is refused before it can touch the first one's
files, and the same content registered again is a no-op (Airflow retries).

Champion. ``champion.json`` moves only in :func:`_move_champion`, a compare-and-swap on ``store.put_if``
(create-only when absent, If-Match the etag otherwise) retried on PreconditionFailed with a fresh read and a
re-check of the caller's expectation. The pointer carries a generation that grows by one per move and the log
entry of that move. Log entries are separate immutable objects rather than a list inside the pointer, so the
pointer stays a few hundred bytes however long the history (serving reads it on every model load). An entry
is only ever written from a committed pointer: by the winner right after its CAS, and, create-only, by the
next mover before its own CAS. Hence while the pointer is at generation g, entries 1..g-1 exist and entry g
is in the pointer: the log is gap-free and never holds a move that lost its race.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import re
import secrets
import time
import unicodedata
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import Any

from postergenre.log import get_logger
from postergenre.storage import NotFound, ObjectStore, PreconditionFailed

log = get_logger(__name__)

Clock = Callable[[], datetime]

METADATA_FILES = ("claim.json", "metrics.json", "decision.json", "lineage.json")
_RESERVED_SEGMENTS = {"versions", "aliases"}
_VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_SEQ_RE = re.compile(r"^v(\d{4,})-")
_MAX_CAS_ATTEMPTS = 200


class RegistryError(Exception):
    """Base of registry errors; the message is one line."""


class InvalidName(RegistryError, ValueError):
    """A model name, version id or file name that cannot be stored safely."""


class NotRegistered(RegistryError, LookupError):
    """The version does not exist or was never completed (no lineage.json)."""


class VersionConflict(RegistryError):
    """A version id is already taken by different content."""


class ChampionChanged(RegistryError):
    """The champion is not what the caller expected; nothing was changed."""


class ChampionContention(RegistryError):
    """The compare-and-swap kept losing to other writers."""


class NoRollbackTarget(RegistryError):
    """There is no champion, or the champion replaced nothing."""


class CorruptVersion(RegistryError):
    """A downloaded file does not match the digest recorded at registration."""


class _Any(Enum):
    ANY = "ANY"


ANY = _Any.ANY
"""``expected_current`` default: move the champion whatever it currently is."""


def utcnow() -> datetime:
    return datetime.now(UTC)


# ---------------------------------------------------------------------------------------------- names, keys


def _slug(segment: str) -> str:
    ascii_text = unicodedata.normalize("NFKD", segment).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_text.casefold()).strip("-")


def model_key(name: str) -> str:
    """The stored form of a model name (see the module docstring); raises InvalidName."""
    segments = [_slug(s) for s in name.split("/")]
    if not name or any(not s or s in _RESERVED_SEGMENTS for s in segments):
        raise InvalidName(f"invalid model name {name!r}")
    return "/".join(segments)


def ova_model_name(genre: str) -> str:
    """Registry name of the one-vs-all model of a genre, e.g. ``genre-ova/science-fiction``."""
    from postergenre import genres

    try:
        return model_key(genres.ova_model_name(genre))
    except ValueError as exc:
        raise InvalidName(str(exc)) from None


def run_version_id(run_id: str) -> str:
    """A version id derived from an Airflow run id (``scheduled__2026-11-24T10:15:00+00:00`` ->
    ``scheduled__2026-11-24T10-15-00-00-00``), so a retried run registers the same version."""
    version = re.sub(r"[^A-Za-z0-9._-]+", "-", run_id).strip("-.")[:128]
    _check_version(version)
    return version


def _check_version(version: str) -> None:
    if not _VERSION_RE.match(version) or version in _RESERVED_SEGMENTS:
        raise InvalidName(f"invalid version id {version!r}")


def _check_file_name(rel: str) -> None:
    parts = rel.split("/")
    if rel in METADATA_FILES or any(p in ("", ".", "..") for p in parts) or "\\" in rel or "\0" in rel:
        raise InvalidName(f"invalid or reserved file name {rel!r}")


def _version_prefix(key: str, version: str) -> str:
    return f"models/{key}/versions/{version}/"


def _champion_key(key: str) -> str:
    return f"models/{key}/champion.json"


def _alias_key(key: str, generation: int) -> str:
    return f"models/{key}/aliases/{generation:08d}.json"


def _uri(store: ObjectStore, prefix: str) -> str:
    return f"{store.url.rstrip('/')}/{prefix}"


def _dumps(obj: Any) -> bytes:
    """Canonical JSON: the same object always gives the same bytes (digests, create-only rewrites)."""
    return json.dumps(obj, sort_keys=True, indent=2, ensure_ascii=False).encode()


def _iso(when: datetime) -> str:
    if when.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware")
    return when.astimezone(UTC).isoformat()


# ---------------------------------------------------------------------------------------------- versions


def _file_digest(source: Path | bytes) -> tuple[int, str]:
    if isinstance(source, bytes):
        return len(source), hashlib.sha256(source).hexdigest()
    digest = hashlib.sha256()
    with source.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return source.stat().st_size, digest.hexdigest()


def _content_digest(files: dict[str, dict], metrics: dict, lineage: dict) -> str:
    # The decision is not part of a version's identity: re-evaluating the same model against a newer champion
    # legitimately produces a new decision, which replaces decision.json (runs keep every decision they made).
    content = {"files": files, "metrics": metrics, "lineage": lineage}
    return hashlib.sha256(_dumps(content)).hexdigest()


def _next_version_id(store: ObjectStore, key: str, now: datetime) -> str:
    """``v<seq>-<UTC time>-<6 hex>``: sorts by registration order, unique even when two writers race."""
    seqs = [0]
    for found in store.list_keys(f"models/{key}/versions/"):
        version = found[len(f"models/{key}/versions/") :].split("/", 1)[0]
        if m := _SEQ_RE.match(version):
            seqs.append(int(m.group(1)))
    return f"v{max(seqs) + 1:04d}-{now.astimezone(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def _claim(store: ObjectStore, prefix: str, digest: str, version: str) -> None:
    """Reserve the version id for this content; raise VersionConflict if other content holds it."""
    try:
        store.put_if(prefix + "claim.json", _dumps({"content_sha256": digest}), if_match=None)
    except PreconditionFailed:
        held = store.get_json(prefix + "claim.json")["content_sha256"]
        if held != digest:
            raise VersionConflict(f"version {version} already holds different content") from None


def register_version(
    store: ObjectStore,
    name: str,
    *,
    files: Mapping[str, Path | bytes],
    metrics: dict,
    lineage: dict,
    decision: dict | None = None,
    version: str | None = None,
    clock: Clock = utcnow,
) -> dict:
    """Store a new immutable version and return ``{name, version, uri}``.

    Registering the same content under the same version id again is a no-op (apart from replacing
    ``decision.json`` with the newest decision); different content under an existing id raises VersionConflict. Without ``version`` a fresh sortable id is generated.
    """
    key = model_key(name)
    now = clock()
    if version is None:
        version = _next_version_id(store, key, now)
    _check_version(version)
    sources = {rel: src if isinstance(src, bytes) else Path(src) for rel, src in files.items()}
    for rel in sources:
        _check_file_name(rel)
    prefix = _version_prefix(key, version)
    result = {"name": key, "version": version, "uri": _uri(store, prefix)}

    manifest_files = {}
    for rel, source in sorted(sources.items()):
        size, sha = _file_digest(source)
        manifest_files[rel] = {"size": size, "sha256": sha}
    digest = _content_digest(manifest_files, metrics, lineage)

    try:
        committed = store.get_json(prefix + "lineage.json")
    except NotFound:
        _claim(store, prefix, digest, version)
        _write_payload(store, prefix, sources, metrics, decision)
        record = {
            "name": key,
            "display_name": name,
            "version": version,
            "registered_at": _iso(now),
            "content_sha256": digest,
            "files": manifest_files,
            "lineage": lineage,
        }
        try:
            store.put_if(prefix + "lineage.json", _dumps(record), if_match=None)  # the commit
        except PreconditionFailed:  # an identical retry committed meanwhile
            committed = store.get_json(prefix + "lineage.json")
        else:
            log.info("registered model version", name=key, version=version)
            return result
    if committed["content_sha256"] != digest:
        raise VersionConflict(f"version {version} of {key} already registered with different content")
    if decision is not None:
        store.put_bytes(prefix + "decision.json", _dumps(decision))
    return result


def _write_payload(
    store: ObjectStore, prefix: str, sources: dict[str, Path | bytes], metrics: dict, decision: dict | None
) -> None:
    """Everything but the commit marker; only writers holding the claim for this content get here."""
    uploads = [(src, prefix + rel) for rel, src in sources.items() if isinstance(src, Path)]
    if uploads:
        store.upload_files(uploads)
    for rel, src in sources.items():
        if isinstance(src, bytes):
            store.put_bytes(prefix + rel, src)
    store.put_bytes(prefix + "metrics.json", _dumps(metrics))
    if decision is not None:
        store.put_bytes(prefix + "decision.json", _dumps(decision))


def _read_record(store: ObjectStore, key: str, version: str) -> dict:
    _check_version(version)
    try:
        return store.get_json(_version_prefix(key, version) + "lineage.json")
    except NotFound:
        raise NotRegistered(f"{key} has no registered version {version}") from None


def _optional_json(store: ObjectStore, key: str) -> Any:
    try:
        return store.get_json(key)
    except NotFound:
        return None


def show_version(store: ObjectStore, name: str, version: str) -> dict:
    """Everything recorded about a version: manifest, lineage, metrics, decision, uri."""
    key = model_key(name)
    record = _read_record(store, key, version)
    prefix = _version_prefix(key, version)
    return {
        **record,
        "uri": _uri(store, prefix),
        "metrics": store.get_json(prefix + "metrics.json"),
        "decision": _optional_json(store, prefix + "decision.json"),
    }


def _split_version_key(object_key: str) -> tuple[str, str, str] | None:
    """``models/<name>/versions/<v>/<rest>`` -> (name, v, rest); names never contain a 'versions' segment."""
    parts = object_key.split("/")
    if parts[0] != "models" or "versions" not in parts:
        return None
    i = parts.index("versions")
    if i < 2 or len(parts) < i + 3:
        return None
    return "/".join(parts[1:i]), parts[i + 1], "/".join(parts[i + 2 :])


def list_models(store: ObjectStore) -> list[str]:
    """Names (stored form) of models with at least one completed version."""
    names = set()
    for found in store.list_keys("models/"):
        split = _split_version_key(found)
        if split and split[2] == "lineage.json":
            names.add(split[0])
    return sorted(names)


def list_versions(store: ObjectStore, name: str) -> list[dict]:
    """Completed versions, oldest registration first: version, registered_at, uri, metrics."""
    key = model_key(name)
    versions = []
    for found in store.list_keys(f"models/{key}/versions/"):
        split = _split_version_key(found)
        if split and split[0] == key and split[2] == "lineage.json":
            versions.append(split[1])
    rows = []
    for version in versions:
        record = _read_record(store, key, version)
        prefix = _version_prefix(key, version)
        rows.append(
            {
                "version": version,
                "registered_at": record["registered_at"],
                "uri": _uri(store, prefix),
                "metrics": store.get_json(prefix + "metrics.json"),
            }
        )
    return sorted(rows, key=lambda r: (r["registered_at"], r["version"]))


def download_version(store: ObjectStore, name: str, version: str, dest: Path) -> Path:
    """Copy a completed version (files + metadata JSON) into ``dest`` and verify every file's digest."""
    key = model_key(name)
    record = _read_record(store, key, version)
    prefix = _version_prefix(key, version)
    names = [*record["files"], "metrics.json", "lineage.json"]
    if store.exists(prefix + "decision.json"):
        names.append("decision.json")
    dest.mkdir(parents=True, exist_ok=True)
    store.download_files([(prefix + rel, dest / rel) for rel in names])
    for rel, expected in record["files"].items():
        if _file_digest(dest / rel) != (expected["size"], expected["sha256"]):
            raise CorruptVersion(f"{key} {version}: {rel} does not match its registered digest")
    return dest


# ---------------------------------------------------------------------------------------------- champion


def _read_pointer(store: ObjectStore, key: str) -> tuple[dict | None, str | None]:
    try:
        data, etag = store.get_with_etag(_champion_key(key))
    except NotFound:
        return None, None
    return json.loads(data), etag


def _write_entry(store: ObjectStore, key: str, entry: dict) -> None:
    """Materialise a committed log entry; create-only, so a second writer of the same entry is harmless."""
    with contextlib.suppress(PreconditionFailed):
        store.put_if(_alias_key(key, entry["generation"]), _dumps(entry), if_match=None)


def _backoff(attempt: int) -> None:
    time.sleep(random.uniform(0, min(0.1, 0.002 * 2**attempt)))


def _move_champion(
    store: ObjectStore,
    key: str,
    version: str,
    *,
    action: str,
    actor: str,
    reason: str,
    decision: dict | None,
    expected_current: str | None | _Any,
    clock: Clock,
) -> dict:
    """The only writer of champion.json: compare-and-swap, retried with a re-read and re-check."""
    _read_record(store, key, version)  # refuses unregistered versions
    decision_key = _version_prefix(key, version) + "decision.json"
    decision_ref = _uri(store, decision_key) if store.exists(decision_key) else None
    for attempt in range(_MAX_CAS_ATTEMPTS):
        pointer, etag = _read_pointer(store, key)
        current = pointer["version"] if pointer else None
        if current == version:
            return {**pointer, "changed": False}
        if expected_current is not ANY and current != expected_current:
            raise ChampionChanged(f"{key}: champion is {current}, expected {expected_current}")
        if pointer:
            _write_entry(store, key, pointer["entry"])  # keeps entries 1..g-1 present before g exists
        now = datetime.fromisoformat(_iso(clock()))
        if pointer:  # log times never go backwards, even with skewed clocks
            now = max(now, datetime.fromisoformat(pointer["since"]))
        generation = (pointer["generation"] if pointer else 0) + 1
        entry = {
            "generation": generation,
            "action": action,
            "from_version": current,
            "to_version": version,
            "actor": actor,
            "reason": reason,
            "time": _iso(now),
            "decision": decision,
            "decision_ref": decision_ref,
        }
        new = {
            "name": key,
            "version": version,
            "generation": generation,
            "since": entry["time"],
            "entry": entry,
        }
        try:
            store.put_if(_champion_key(key), _dumps(new), if_match=etag)
        except PreconditionFailed:
            _backoff(attempt)
            continue
        _write_entry(store, key, entry)
        log.info(
            "champion moved",
            name=key,
            action=action,
            generation=generation,
            to_version=version,
            from_version=current,
            actor=actor,
        )
        return {**new, "changed": True}
    raise ChampionContention(f"{key}: champion CAS lost {_MAX_CAS_ATTEMPTS} times in a row")


def get_champion(store: ObjectStore, name: str) -> dict | None:
    """The current champion pointer ``{name, version, generation, since, entry}``, or None."""
    return _read_pointer(store, model_key(name))[0]


def promote(
    store: ObjectStore,
    name: str,
    version: str,
    *,
    actor: str,
    reason: str,
    decision: dict | None = None,
    expected_current: str | None | _Any = ANY,
    clock: Clock = utcnow,
) -> dict:
    """Make ``version`` the champion; returns the new pointer plus ``changed``.

    ``expected_current`` (a version id, or None for "no champion yet") makes the move conditional: if the
    champion is something else, ChampionChanged is raised and nothing changes. Promoting the current champion
    is a no-op (``changed: False``), so retried tasks do not add log entries.
    """
    return _move_champion(
        store,
        model_key(name),
        version,
        action="promote",
        actor=actor,
        reason=reason,
        decision=decision,
        expected_current=expected_current,
        clock=clock,
    )


def rollback(
    store: ObjectStore,
    name: str,
    *,
    to_version: str | None = None,
    actor: str,
    reason: str,
    clock: Clock = utcnow,
) -> dict:
    """Move the champion back, by default to the version it replaced (``from_version`` of the last move).

    The move is conditional on the champion read here, so a concurrent promotion is never rolled back blindly.
    """
    key = model_key(name)
    pointer, _ = _read_pointer(store, key)
    if pointer is None:
        raise NoRollbackTarget(f"{key} has no champion to roll back")
    target = to_version or pointer["entry"]["from_version"]
    if target is None:
        raise NoRollbackTarget(f"{key}: champion {pointer['version']} has no predecessor")
    return _move_champion(
        store,
        key,
        target,
        action="rollback",
        actor=actor,
        reason=reason,
        decision=None,
        expected_current=pointer["version"],
        clock=clock,
    )


def history(store: ObjectStore, name: str) -> list[dict]:
    """The alias log, generation 1 first."""
    key = model_key(name)
    pointer, _ = _read_pointer(store, key)
    if pointer is None:
        return []

    def read(generation: int) -> dict:
        try:
            return store.get_json(_alias_key(key, generation))
        except NotFound:
            raise RegistryError(f"{key}: alias log entry {generation} is missing") from None

    with ThreadPoolExecutor(max_workers=16) as pool:
        entries: Iterator[dict] = pool.map(read, range(1, pointer["generation"]))
        return [*entries, pointer["entry"]]


def champion_at(store: ObjectStore, name: str, when: datetime) -> str | None:
    """The version that was champion at ``when`` (timezone-aware), or None before the first promotion."""
    instant = datetime.fromisoformat(_iso(when))
    champion = None
    for entry in history(store, name):
        if datetime.fromisoformat(entry["time"]) > instant:
            break
        champion = entry["to_version"]
    return champion

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

Champion. The champion pointer, its alias log and rollback live in :mod:`postergenre.champion` and are
re-exported here (``registry.promote``, ``registry.rollback``, ``registry.history``, ...).

Corruption. Every JSON file is read through one helper, so an unparsable or wrongly shaped file raises
CorruptRegistry naming its URI, never a bare ``Expecting value`` or a KeyError.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import unicodedata
from collections.abc import Callable, Mapping
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


class CorruptRegistry(RegistryError):
    """A registry file is not valid JSON or not of the shape it must have; the message names the file."""


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


def _file_name_problem(rel: str) -> bool:
    parts = rel.split("/")
    return rel in METADATA_FILES or any(p in ("", ".", "..") for p in parts) or "\\" in rel or "\0" in rel


def _check_file_name(rel: str) -> None:
    if _file_name_problem(rel):
        raise InvalidName(f"invalid or reserved file name {rel!r}")


def _version_prefix(key: str, version: str) -> str:
    return f"models/{key}/versions/{version}/"


def _uri(store: ObjectStore, prefix: str) -> str:
    return f"{store.url.rstrip('/')}/{prefix}"


def _dumps(obj: Any) -> bytes:
    """Canonical JSON: the same object always gives the same bytes (digests, create-only rewrites)."""
    return json.dumps(obj, sort_keys=True, indent=2, ensure_ascii=False).encode()


def _iso(when: datetime) -> str:
    if when.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware")
    return when.astimezone(UTC).isoformat()


# ---------------------------------------------------------------------------------------------- reading JSON


def _parse_json(data: bytes, where: str) -> Any:
    """Parse a registry file; a broken one is a CorruptRegistry that says which file (``where``) it is."""
    try:
        return json.loads(data)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError both are ValueErrors
        raise CorruptRegistry(f"{where}: not valid JSON ({str(exc).splitlines()[0]})") from None


def _read_json(store: ObjectStore, key: str) -> Any:
    """``store.get_json`` naming the file on corruption; NotFound passes through for the caller to judge."""
    return _parse_json(store.get_bytes(key), _uri(store, key))


def _read_object(store: ObjectStore, key: str, problem: Callable[[Any], str | None]) -> dict:
    """A JSON object whose shape ``problem`` accepts (it returns None) or a CorruptRegistry naming the file."""
    obj = _read_json(store, key)
    if reason := problem(obj):
        raise CorruptRegistry(f"{_uri(store, key)}: {reason}")
    return obj


def _object_problem(obj: Any) -> str | None:
    return None if isinstance(obj, dict) else f"expected a JSON object, found {type(obj).__name__}"


def _claim_problem(claim: Any) -> str | None:
    if not isinstance(claim, dict) or not isinstance(claim.get("content_sha256"), str):
        return "not a version claim (no 'content_sha256' digest)"
    return None


def _record_problem(record: Any) -> str | None:
    """Why ``record`` is not a lineage.json written by :func:`register_version`, or None."""
    if not isinstance(record, dict):
        return f"not a version record: expected a JSON object, found {type(record).__name__}"
    for field in ("registered_at", "content_sha256"):
        if not isinstance(record.get(field), str):
            return f"not a version record: '{field}' must be a string"
    files = record.get("files")
    if not isinstance(files, dict) or not all(
        isinstance(f, dict) and isinstance(f.get("size"), int) and isinstance(f.get("sha256"), str)
        for f in files.values()
    ):
        return "not a version record: 'files' must map names to {size, sha256}"
    if any(_file_name_problem(rel) for rel in files):
        return "not a version record: 'files' holds a name outside the version folder"
    return None


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
        held = _read_object(store, prefix + "claim.json", _claim_problem)["content_sha256"]
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
        committed = _read_object(store, prefix + "lineage.json", _record_problem)
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
            committed = _read_object(store, prefix + "lineage.json", _record_problem)
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
        return _read_object(store, _version_prefix(key, version) + "lineage.json", _record_problem)
    except NotFound:
        raise NotRegistered(f"{key} has no registered version {version}") from None


def _optional_json(store: ObjectStore, key: str) -> Any:
    try:
        return _read_object(store, key, _object_problem)
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
        "metrics": _read_object(store, prefix + "metrics.json", _object_problem),
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
                "metrics": _read_object(store, prefix + "metrics.json", _object_problem),
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

_CHAMPION_API = ("champion_at", "get_champion", "history", "promote", "rollback", "rollback_target")


def __getattr__(name: str) -> Any:
    """``registry.promote`` & co. come from :mod:`postergenre.champion`, imported on first use: it builds on
    this module, so importing it here at load time would be circular."""
    if name in _CHAMPION_API:
        from postergenre import champion

        return getattr(champion, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

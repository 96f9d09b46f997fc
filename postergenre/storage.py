"""Object storage behind one small interface: a local directory (``file://``) or any S3 API (``s3://``).

Everything the project persists (posters, datasets, models, the registry) goes through :class:`ObjectStore`,
so the same code runs on a laptop (files), in CI (a real SeaweedFS) and in production (AWS S3, MinIO, ...).
Writes are atomic and ``put_if`` is a compare-and-swap on the ETag, which is what lets several schedulers
update shared pointers (e.g. the model registry) without a lock service.
The file backend lives here, the S3 one in :mod:`postergenre.storage_s3`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import shutil
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit
from urllib.request import url2pathname

Progress = Callable[[int], None]

# Names starting with this are the file backend's own (locks, half-written temp files); keys may not use it.
_RESERVED = ".~"
_LOCK_DIR = f"{_RESERVED}locks"
_TMP_PREFIX = f"{_RESERVED}tmp-"
_CHUNK = 1 << 20


class StoreError(Exception):
    """Base of every storage failure; the message is one line, fit for a CLI error."""


class NotFound(StoreError):
    """The key does not exist."""


class PreconditionFailed(StoreError):
    """A conditional write lost: the object changed (or appeared) since the caller read it."""


class StoreUnreachable(StoreError):
    """The store cannot be used at all: no connection, no such bucket, bad credentials, unwritable root."""


class InvalidKey(StoreError, ValueError):
    """The key would not map to the same object on every backend (or could escape a file store's root)."""


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str
    # Last write, in seconds since the epoch where the backend tells; not part of an object's identity.
    modified: float | None = field(default=None, compare=False)


def validate_key(key: str) -> str:
    """Return ``key`` if it is a portable relative key, else raise :class:`InvalidKey`.

    Both backends share these rules so a key that works on files also works on S3 and vice versa.
    """
    if not isinstance(key, str) or not key:
        raise InvalidKey(f"invalid key {key!r}: must be a non-empty string")
    if "\\" in key or "\x00" in key:
        raise InvalidKey(f"invalid key {key!r}: backslash and NUL are not allowed")
    if key.startswith("/"):
        raise InvalidKey(f"invalid key {key!r}: must be relative (no leading '/')")
    for part in key.split("/"):
        if part in ("", ".", ".."):
            raise InvalidKey(f"invalid key {key!r}: empty, '.' or '..' path segment")
        if part.startswith(_RESERVED):
            raise InvalidKey(f"invalid key {key!r}: segments starting with {_RESERVED!r} are reserved")
    return key


def _validate_prefix(prefix: str) -> str:
    """A list prefix is a key that may stop anywhere, even mid-segment or right after a '/'."""
    if prefix:
        validate_key(prefix + "x")
    return prefix


def _encode_json(obj: Any) -> bytes:
    return (json.dumps(obj, sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


class ObjectStore(ABC):
    """Keys are '/'-separated relative paths (see :func:`validate_key`), values bytes, etags opaque."""

    url: str

    @abstractmethod
    def put_bytes(self, key: str, data: bytes) -> str:
        """Write atomically (readers see the old or the new object, never a part); return the new etag."""

    @abstractmethod
    def get_with_etag(self, key: str) -> tuple[bytes, str]:
        """Content and etag of one consistent version; :class:`NotFound` if absent."""

    @abstractmethod
    def put_if(self, key: str, data: bytes, *, if_match: str | None) -> str:
        """Compare-and-swap: ``if_match=None`` creates only if absent, else writes only if the current etag
        equals ``if_match``. Raises :class:`PreconditionFailed` otherwise; returns the new etag."""

    @abstractmethod
    def head(self, key: str) -> ObjectInfo | None:
        """Size and etag, or None if absent."""

    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object whose key starts with ``prefix`` (a plain string prefix, recursive), sorted by key."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object; a missing key is not an error."""

    @abstractmethod
    def upload_files(self, items: Sequence[tuple[Path, str]], progress: Progress | None = None) -> int:
        """Copy local files to keys in parallel; ``progress(n_bytes)`` after each file; return bytes sent."""

    @abstractmethod
    def download_file(self, key: str, dest: Path) -> None:
        """Write the object to ``dest`` atomically (parents created); :class:`NotFound` if absent."""

    @abstractmethod
    def download_files(self, items: Sequence[tuple[str, Path]], progress: Progress | None = None) -> int:
        """Parallel :meth:`download_file`; ``progress(n_bytes)`` after each file; return bytes received."""

    @abstractmethod
    def check(self) -> None:
        """Cheap probe that the store is usable; :class:`StoreUnreachable` with the reason otherwise."""

    def sweep_temporaries(self, prefix: str, older_than: float) -> int:
        """Remove what writers killed mid-write left under ``prefix`` more than ``older_than`` seconds ago
        (never a complete object); return how many were removed. Nothing to do where writes leave nothing."""
        return 0

    def list_keys(self, prefix: str = "") -> Iterator[str]:
        """Keys under ``prefix``, sorted (backends may answer this cheaper than ``list``)."""
        return (info.key for info in self.list(prefix))

    def get_bytes(self, key: str) -> bytes:
        return self.get_with_etag(key)[0]

    def exists(self, key: str) -> bool:
        return self.head(key) is not None

    def put_json(self, key: str, obj: Any) -> str:
        """Canonical JSON (sorted keys) so equal documents have equal etags."""
        return self.put_bytes(key, _encode_json(obj))

    def get_json(self, key: str) -> Any:
        return json.loads(self.get_bytes(key))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"


# --------------------------------------------------------------------------------------------- file backend


def _md5_file(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:  # renamed or removed since the listing: not a leftover
        return float("inf")


def _write_atomic(dest: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write via a temp file in the destination directory, fsync, then rename over ``dest``.

    The rename is atomic on POSIX, so concurrent readers never see a partial object, even after a crash.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f"{_TMP_PREFIX}{secrets.token_hex(8)}"
    try:
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _copy_atomic(src: Path, dest: Path) -> int:
    _write_atomic(dest, lambda out: _copy_stream(src, out))
    return dest.stat().st_size


def _copy_stream(src: Path, out: IO[bytes]) -> None:
    with src.open("rb") as fh:
        shutil.copyfileobj(fh, out, _CHUNK)


class FileStore(ObjectStore):
    """Objects are files under ``root``; the etag is the MD5 of the content (like S3 single-part uploads)."""

    def __init__(self, root: Path, *, concurrency: int = 32) -> None:
        if not root.is_absolute():
            raise StoreError(f"file store root must be absolute, got {str(root)!r}")
        self.root = root
        self.url = root.as_uri()
        self.concurrency = max(1, concurrency)

    def _path(self, key: str) -> Path:
        return self.root / validate_key(key)

    @contextlib.contextmanager
    def _errors(self, key: str) -> Iterator[None]:
        """Turn OS errors into store errors so callers handle one exception family."""
        try:
            yield
        except FileNotFoundError as err:
            raise NotFound(f"{self.url}: no object {key!r}") from err
        except (NotADirectoryError, IsADirectoryError) as err:
            raise StoreError(f"{self.url}: key {key!r} clashes with a key that is its parent/child") from err
        except PermissionError as err:
            raise StoreUnreachable(f"{self.url}: permission denied ({err.filename})") from err
        except OSError as err:  # a full disk (ENOSPC), a read-only file system, an I/O error...
            raise StoreError(f"{self.url}: cannot write or read {key!r}: {err.strerror or err}") from err

    def put_bytes(self, key: str, data: bytes) -> str:
        path = self._path(key)
        with self._errors(key):
            _write_atomic(path, lambda fh: fh.write(data))
        return hashlib.md5(data).hexdigest()

    def get_with_etag(self, key: str) -> tuple[bytes, str]:
        path = self._path(key)
        with self._errors(key):
            data = path.read_bytes()
        return data, hashlib.md5(data).hexdigest()

    @contextlib.contextmanager
    def _key_lock(self, key: str) -> Iterator[None]:
        """An exclusive flock per key: serialises ``put_if`` across threads and processes on this host."""
        lock_dir = self.root / _LOCK_DIR
        lock_dir.mkdir(parents=True, exist_ok=True)
        name = hashlib.sha1(key.encode("utf-8")).hexdigest()
        with open(lock_dir / name, "a+b") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def put_if(self, key: str, data: bytes, *, if_match: str | None) -> str:
        path = self._path(key)
        with self._errors(key), self._key_lock(key):
            try:
                current: str | None = _md5_file(path)
            except FileNotFoundError:
                current = None
            if current != if_match:
                wanted = "absent" if if_match is None else f"etag {if_match}"
                raise PreconditionFailed(f"{self.url}: {key!r} is not {wanted}")
            _write_atomic(path, lambda fh: fh.write(data))
        return hashlib.md5(data).hexdigest()

    def head(self, key: str) -> ObjectInfo | None:
        path = self._path(key)
        if not path.is_file():
            return None
        with self._errors(key):
            info = path.stat()
            return ObjectInfo(key, info.st_size, _md5_file(path), info.st_mtime)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        _validate_prefix(prefix)
        # Only walk the directory the prefix fully names; the rest of the prefix filters names.
        for key in self.list_keys(prefix):
            info = self.head(key)
            if info is not None:  # deleted since the walk
                yield info

    def _walk(self, start: Path) -> Iterator[str]:
        for dirpath, dirnames, filenames in os.walk(start):
            dirnames[:] = [d for d in dirnames if not d.startswith(_RESERVED)]
            rel = Path(dirpath).relative_to(self.root).as_posix()
            for name in filenames:
                if not name.startswith(_RESERVED):
                    yield name if rel == "." else f"{rel}/{name}"

    def list_keys(self, prefix: str = "") -> Iterator[str]:
        """Like ``list`` but without hashing every file: the cheap way to ask "what is there"."""
        _validate_prefix(prefix)
        yield from sorted(
            k for k in self._walk(self.root / prefix.rpartition("/")[0]) if k.startswith(prefix)
        )

    def delete(self, key: str) -> None:
        path = self._path(key)
        with self._errors(key):
            path.unlink(missing_ok=True)

    def _parallel(self, jobs: Sequence[tuple[Callable[[], int], str]], progress: Progress | None) -> int:
        """Run copy jobs on a thread pool; report progress from the caller's thread as each finishes."""
        total = 0
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            futures = {pool.submit(job): key for job, key in jobs}
            try:
                for future in as_completed(futures):
                    with self._errors(futures[future]):
                        size = future.result()
                    total += size
                    if progress is not None:
                        progress(size)
            except BaseException:
                pool.shutdown(cancel_futures=True)
                raise
        return total

    def upload_files(self, items: Sequence[tuple[Path, str]], progress: Progress | None = None) -> int:
        jobs = [(partial(_copy_atomic, Path(src), self._path(key)), key) for src, key in items]
        return self._parallel(jobs, progress)

    def download_file(self, key: str, dest: Path) -> None:
        src = self._path(key)
        with self._errors(key):
            _copy_atomic(src, Path(dest))

    def download_files(self, items: Sequence[tuple[str, Path]], progress: Progress | None = None) -> int:
        jobs = [(partial(_copy_atomic, self._path(key), Path(dest)), key) for key, dest in items]
        return self._parallel(jobs, progress)

    def sweep_temporaries(self, prefix: str, older_than: float) -> int:
        """Delete ``.~tmp-*`` files of :func:`_write_atomic` calls that were killed before their rename."""
        _validate_prefix(prefix)
        cutoff = time.time() - older_than
        removed = 0
        for dirpath, dirnames, filenames in os.walk(self.root / prefix.rpartition("/")[0]):
            dirnames[:] = [d for d in dirnames if not d.startswith(_RESERVED)]
            for name in filenames:
                path = Path(dirpath) / name
                if name.startswith(_TMP_PREFIX) and _mtime(path) < cutoff:
                    path.unlink(missing_ok=True)
                    removed += 1
        return removed

    def check(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise StoreUnreachable(f"{self.url}: cannot create store root ({err.strerror})") from err
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise StoreUnreachable(f"{self.url}: store root is not writable")


def open_store(url: str, *, concurrency: int = 32) -> ObjectStore:
    """The store for ``file:///abs/path`` or ``s3://bucket/prefix``."""
    parts = urlsplit(url)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise StoreError(f"file store URL must be file:///absolute/path, got {url!r}")
        return FileStore(Path(url2pathname(parts.path)), concurrency=concurrency)
    if parts.scheme == "s3":
        from postergenre.storage_s3 import S3Store

        return S3Store(url, concurrency=concurrency)
    raise StoreError(f"unsupported store URL {url!r}: use file:///absolute/path or s3://bucket/prefix")


def __getattr__(name: str) -> Any:
    """``postergenre.storage.S3Store`` still works, without importing boto3's side for file-only users."""
    if name == "S3Store":
        from postergenre.storage_s3 import S3Store

        return S3Store
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

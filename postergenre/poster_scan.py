"""The export's poster files: listed without following links, read within the caps, checked on a thread pool.

Checking overlaps with uploading (PIL decoding, hashing and socket I/O release the GIL), so an ingest costs
about its upload time. However many threads run, at most ``Limits.memory_bytes`` of poster bytes and decoded
pixels are in memory at once, and files over the byte cap are never read at all.
"""

from __future__ import annotations

import os
import stat
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from postergenre.cleanup import signals_deferred
from postergenre.exportfs import NotRegular, TooLarge, kind_of, open_regular, read_fd, read_regular, walk
from postergenre.limits import Limits, env_name
from postergenre.validation import (
    PosterCheck,
    Rejected,
    SourceError,
    check_poster,
    decode_cost,
    poster_id_from_name,
    sha256_bytes,
)

_HEAD = 64 * 1024  # enough for the JPEG/PNG header that gives the image size

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class PosterFile:
    name: str  # relative to posters/, '/'-separated
    path: Path
    movie_id: int
    size: int


def _too_large(size: int, cap: int) -> str:
    return f"{size} bytes, over the cap of {cap} ({env_name('max_poster_bytes')}); not read"


def list_poster_files(root: Path, limits: Limits) -> tuple[list[PosterFile], list[Rejected]]:
    """The regular, well-named, small-enough files under ``root/posters``; every other name, with why."""
    folder = root / "posters"
    try:
        mode = folder.lstat().st_mode
    except FileNotFoundError:
        return [], []
    if not stat.S_ISDIR(mode):
        detail = f"posters is {kind_of(mode)}, not a folder: not followed"
        return [], [
            Rejected("not_a_regular_file" if not stat.S_ISLNK(mode) else "symlink", detail, name="posters")
        ]
    files: list[PosterFile] = []
    rejected: list[Rejected] = []
    for entry in walk(folder):
        movie_id = poster_id_from_name(entry.rel)
        if stat.S_ISLNK(entry.mode):
            rejected.append(
                Rejected("symlink", "a symbolic link: never followed", movie_id=movie_id, name=entry.rel)
            )
        elif not entry.regular:
            detail = f"{kind_of(entry.mode)}: never opened"
            rejected.append(Rejected("not_a_regular_file", detail, movie_id=movie_id, name=entry.rel))
        elif movie_id is None:
            rejected.append(Rejected("bad_poster_name", "not <digits>.jpg/.png", name=entry.rel))
        elif entry.size > limits.poster_bytes:
            detail = _too_large(entry.size, limits.poster_bytes)
            rejected.append(
                Rejected("poster_too_large", detail, movie_id=movie_id, name=entry.rel, size=entry.size)
            )
        else:
            files.append(PosterFile(entry.rel, entry.path, movie_id, entry.size))
    return files, rejected


class ByteBudget:
    """``hold(n)`` waits until ``n`` more bytes fit in the budget; a request bigger than all of it runs alone."""

    def __init__(self, total: int) -> None:
        self._total = total
        self._used = 0
        self._cond = threading.Condition()

    @contextmanager
    def hold(self, n: int) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: self._used == 0 or self._used + n <= self._total)
            self._used += n
        try:
            yield
        finally:
            with self._cond:
                self._used -= n
                self._cond.notify_all()


def ordered_map(fn: Callable[[T], R], items: Iterable[T], workers: int) -> Iterator[R]:
    """``fn`` over ``items`` on a pool, results in input order, a bounded number queued (not one future per
    poster of a million); on an error or an interrupt the queued ones are cancelled, not run."""
    pending: deque[Future[R]] = deque()
    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        for item in items:
            with signals_deferred():  # a SIGTERM inside submit could leave a thread the pool does not wait for
                pending.append(pool.submit(fn, item))
            if len(pending) >= 4 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for future in pending:
            future.cancel()
        with signals_deferred():  # running uploads finish their atomic renames before anything unwinds further
            pool.shutdown(wait=True)


OnValid = Callable[[PosterFile, PosterCheck, bytes], None]


def _unread(reason: str, detail: str, size: int = 0) -> PosterCheck:
    return PosterCheck(None, size, reason=reason, detail=detail)


def read_and_check(
    poster: PosterFile, known_valid: set[str], limits: Limits, budget: ByteBudget, on_valid: OnValid | None
) -> PosterCheck:
    """Check one poster; a valid one is handed to ``on_valid`` while its bytes are still in memory."""
    try:
        fd, info = open_regular(poster.path)
    except NotRegular as err:  # swapped for a link or a FIFO since it was listed
        return _unread("symlink" if "link" in err.kind else "not_a_regular_file", f"{err.kind}: never read")
    except OSError as err:
        return _unread("unreadable_poster", err.strerror or str(err))
    try:
        if info.st_size > limits.poster_bytes:
            return _unread("poster_too_large", _too_large(info.st_size, limits.poster_bytes), info.st_size)
        head = os.read(fd, _HEAD)
        with budget.hold(info.st_size + decode_cost(head, limits.image_pixels)):
            try:
                data = read_fd(fd, limits.poster_bytes, poster.path, head)
            except TooLarge as err:  # it grew since the size check
                return _unread("poster_too_large", _too_large(err.size, limits.poster_bytes), err.size)
            digest = sha256_bytes(data)
            known = digest in known_valid
            check = check_poster(data, digest=digest, decode=not known, max_pixels=limits.image_pixels)
            if check.reason is None and not known and on_valid is not None:  # stored ones: no upload
                on_valid(poster, check, data)
            return check
    except OSError as err:
        return _unread("unreadable_poster", err.strerror or str(err))
    finally:
        os.close(fd)


def scan_posters(
    files: list[PosterFile],
    known_valid: set[str],
    limits: Limits,
    *,
    on_valid: OnValid | None,
    workers: int,
    advance: Callable[[int], None],
) -> list[PosterCheck]:
    """Every poster's check, in input order."""
    budget = ByteBudget(limits.memory_bytes)

    def one(poster: PosterFile) -> PosterCheck:
        check = read_and_check(poster, known_valid, limits, budget, on_valid)
        advance(1)
        return check

    return list(ordered_map(one, files, workers))


def reread(poster: PosterFile, digest: str, limits: Limits) -> bytes:
    """The poster's bytes once more, for an upload after the checks: the same file, never a swapped-in link,
    and exactly the content that was checked (a content-addressed blob must hold what its key says)."""
    try:
        data = read_regular(poster.path, limits.poster_bytes)
    except OSError as err:
        raise SourceError(f"posters/{poster.name} changed while it was ingested ({err})") from None
    if sha256_bytes(data) != digest:
        raise SourceError(f"posters/{poster.name} changed while it was ingested (its content is different)")
    return data


def upload_posters(
    items: list[tuple[PosterFile, str, str]],
    put: Callable[[str, bytes], object],
    limits: Limits,
    *,
    workers: int,
    advance: Callable[[int], None],
) -> int:
    """Upload ``(poster, key, sha256)`` items by re-reading each file; return the bytes sent."""
    budget = ByteBudget(limits.memory_bytes)

    def one(item: tuple[PosterFile, str, str]) -> int:
        poster, key, digest = item
        with budget.hold(poster.size):
            data = reread(poster, digest, limits)
            put(key, data)
        advance(len(data))
        return len(data)

    return sum(ordered_map(one, items, workers))

"""Reading a local export without ever leaving it: links are reported, never followed, and reads are capped.

An export is untrusted input. ``posters/1.jpg -> /etc/passwd`` or ``genres.csv -> ~/.aws/credentials`` must not
be read, so every file is opened with ``O_NOFOLLOW`` (the check and the open are one system call, no window for
a swap) and ``O_NONBLOCK`` (a FIFO planted in the export cannot hang the ingest), and must be a regular file.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_CHUNK = 1 << 20


class NotRegular(OSError):
    """The path is a link, a directory, a FIFO, a device...: anything but a plain file."""

    def __init__(self, path: Path, kind: str) -> None:
        super().__init__(f"{path.name} is {kind}, not a regular file")
        self.kind = kind


class TooLarge(OSError):
    """The file is bigger than the cap its caller allows; nothing beyond the cap was read."""

    def __init__(self, name: str, size: int, cap: int) -> None:
        super().__init__(f"{name} is {size} bytes, over the cap of {cap}")
        self.size = size
        self.cap = cap


def kind_of(mode: int) -> str:
    """A file type in words, for quarantine reasons and error messages."""
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISREG(mode):
        return "a regular file"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a device"


@dataclass(frozen=True)
class Entry:
    """One name found in an export folder: ``rel`` is '/'-separated, relative to the listed folder."""

    rel: str
    path: Path
    mode: int
    size: int

    @property
    def regular(self) -> bool:
        return stat.S_ISREG(self.mode)


def walk(folder: Path) -> Iterator[Entry]:
    """Every non-directory under ``folder`` (links to directories included, not entered), sorted by name."""
    found: list[Entry] = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        base = Path(dirpath)
        linked = [d for d in dirnames if (base / d).is_symlink()]
        dirnames[:] = sorted(d for d in dirnames if d not in linked)
        for name in [*filenames, *linked]:
            path = base / name
            try:
                info = path.lstat()
            except FileNotFoundError:  # gone since the listing
                continue
            found.append(Entry(path.relative_to(folder).as_posix(), path, info.st_mode, info.st_size))
    return iter(sorted(found, key=lambda e: e.rel))


def open_regular(path: Path) -> tuple[int, os.stat_result]:
    """An fd on ``path`` if it is a regular file (its own stat, after the open); else :class:`NotRegular`."""
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as err:
        if err.errno == errno.ELOOP:  # O_NOFOLLOW met a symbolic link
            raise NotRegular(path, "a symbolic link") from None
        raise
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise NotRegular(path, kind_of(info.st_mode))
    return fd, info


def read_fd(fd: int, cap: int, path: Path, already: bytes = b"") -> bytes:
    """The rest of ``fd`` after ``already``; :class:`TooLarge` as soon as more than ``cap`` bytes came."""
    chunks = [already]
    total = len(already)
    while chunk := os.read(fd, min(_CHUNK, cap + 1 - total) or 1):
        chunks.append(chunk)
        total += len(chunk)
        if total > cap:  # the file grew past the cap since its size was checked
            raise TooLarge(path.name, total, cap)
    return b"".join(chunks)


def read_regular(path: Path, cap: int) -> bytes:
    """The bytes of a regular file of at most ``cap`` bytes, never following a link; else an OSError subclass."""
    fd, info = open_regular(path)
    try:
        if info.st_size > cap:
            raise TooLarge(path.name, info.st_size, cap)
        return read_fd(fd, cap, path)
    finally:
        os.close(fd)

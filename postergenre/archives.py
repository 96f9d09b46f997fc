"""Extract a .zip or tar export into a work folder: safe names, regular files only, within the caps.

Every member that is not extracted is reported with its reason, never silently dropped: unsafe paths, links,
devices, corrupt data, duplicates and file/folder clashes, and members over a cap, whose declared size is
recorded without one byte of them being written (a 2 MB zip may declare a 1 GiB "poster"). Only the files an
export consists of (``genres.csv`` and what lies under a ``posters/`` folder) are extracted at all.
"""

from __future__ import annotations

import contextlib
import lzma
import os
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PurePosixPath
from typing import IO

from postergenre.exportfs import TooLarge
from postergenre.limits import Limits, env_name
from postergenre.validation import Rejected, SourceError

# Below this many expanded bytes the compression ratio is not judged: a small text file of repeated lines
# compresses far better than any poster, and so little data cannot hurt (the byte caps still apply).
RATIO_FLOOR = 1 << 20
_CHUNK = 1 << 20
_WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
# What reading a damaged member raises, by library: zipfile (bad CRC, truncation, encryption, unknown method),
# the decompressors, and tarfile.
_CORRUPT = (zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError, NotImplementedError, RuntimeError)
_UNREADABLE_ARCHIVE = (tarfile.TarError, zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError, OSError)


@dataclass(frozen=True)
class Member:
    name: str
    kind: str  # file, dir, symlink, hardlink or special
    size: int  # declared uncompressed size
    compressed: int | None  # zip only: tar compresses the whole stream, not members
    open: Callable[[], IO[bytes]]


def _zip_kind(info: zipfile.ZipInfo) -> str:
    if info.is_dir():
        return "dir"
    mode = info.external_attr >> 16
    if info.create_system != 3 or not stat.S_IFMT(mode):  # no Unix file type recorded: a plain file
        return "file"
    if stat.S_ISLNK(mode):
        return "symlink"
    return "file" if stat.S_ISREG(mode) else "special"


def _tar_kind(info: tarfile.TarInfo) -> str:
    if info.isfile():
        return "file"
    if info.isdir():
        return "dir"
    if info.issym():
        return "symlink"
    return "hardlink" if info.islnk() else "special"


def _members(archive: Path, stack: contextlib.ExitStack) -> Iterator[Member]:
    if zipfile.is_zipfile(archive):
        zf = stack.enter_context(zipfile.ZipFile(archive))
        for info in zf.infolist():
            yield Member(
                info.filename, _zip_kind(info), info.file_size, info.compress_size, partial(zf.open, info)
            )
        return
    tf = stack.enter_context(tarfile.open(archive))  # noqa: SIM115 (the caller's stack closes it)
    for info in tf:  # one pass: a compressed tar is read once, not once for the index and again to extract
        yield Member(info.name, _tar_kind(info), info.size, None, partial(tf.extractfile, info))


def safe_name(name: str) -> str | None:
    """The member's relative '/'-path, or None if it could land outside the extraction folder."""
    if "\x00" in name or ":" in name:
        return None
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or not path.parts:
        return None
    return path.as_posix()


def role(name: str) -> str | None:
    """``csv`` or ``poster`` for the files an export is made of; None for anything else (never extracted)."""
    parts = PurePosixPath(name).parts
    if parts[-1] == "genres.csv":
        return "csv"
    return "poster" if "posters" in parts[:-1] else None


def member_problem(member: Member, name: str | None, limits: Limits) -> Rejected | None:
    """Why ``member`` must not be extracted, judged from the archive's index alone (nothing is read)."""
    if name is None:
        return Rejected("unsafe_archive_path", "path escapes the archive", name=member.name)
    if member.kind in ("symlink", "hardlink"):
        return Rejected("archive_link", f"a {member.kind} member is never followed", name=member.name)
    if member.kind == "special":
        return Rejected("not_a_regular_file", "a device or FIFO member", name=member.name)
    kind = role(name)
    cap, field = (
        (limits.poster_bytes, "max_poster_bytes") if kind == "poster" else (limits.csv_bytes, "max_csv_bytes")
    )
    if kind is not None and member.size > cap:
        reason = "poster_too_large" if kind == "poster" else "file_too_large"
        detail = f"{member.size} bytes declared, over the cap of {cap} ({env_name(field)}); not extracted"
        return Rejected(reason, detail, name=member.name, size=member.size)
    compressed = member.compressed
    if (
        compressed is not None
        and member.size > RATIO_FLOOR
        and member.size > compressed * limits.compression_ratio
    ):
        detail = (
            f"expands {member.size} bytes from {compressed} (over {limits.compression_ratio:g}x, "
            f"{env_name('max_compression_ratio')}); not extracted"
        )
        return Rejected("compression_ratio", detail, name=member.name, size=member.size)
    return None


def _copy_capped(src: IO[bytes], out: IO[bytes], cap: int, name: str) -> None:
    total = 0
    while chunk := src.read(_CHUNK):
        total += len(chunk)
        if total > cap:  # more than declared: never write beyond what the index promised
            raise TooLarge(name, total, cap)
        out.write(chunk)


def _extract_one(member: Member, name: str, dest: Path) -> Rejected | None:
    target = dest / name
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(target, _WRITE_FLAGS, 0o600)
    except (FileExistsError, NotADirectoryError, IsADirectoryError):
        detail = "a file and a folder of the same name (or a file inside a file)"
        return Rejected("archive_path_clash", detail, name=member.name)
    except OSError as err:
        raise SourceError(f"cannot extract {member.name} into {dest}: {err.strerror or err}") from None
    try:
        with os.fdopen(fd, "wb") as out, member.open() as src:
            _copy_capped(src, out, member.size, member.name)
    except (*_CORRUPT, TooLarge, tarfile.TarError) as err:
        target.unlink(missing_ok=True)
        detail = (str(err).splitlines() or [type(err).__name__])[0][:200]
        return Rejected("corrupt_archive_member", detail, name=member.name)
    except OSError as err:  # the temp disk is full, or similar: the ingest as a whole cannot go on
        target.unlink(missing_ok=True)
        raise SourceError(f"cannot extract {member.name} into {dest}: {err.strerror or err}") from None
    return None


def _check_totals(archive: Path, declared: int, expanded: int, archive_size: int, limits: Limits) -> None:
    if declared > limits.archive_bytes:
        raise SourceError(
            f"{archive.name}: expands to more than {limits.archive_bytes} bytes "
            f"({env_name('max_archive_bytes')}); refusing to extract it"
        )
    if expanded > RATIO_FLOOR and expanded > archive_size * limits.compression_ratio:
        raise SourceError(
            f"{archive.name}: expands more than {limits.compression_ratio:g}x its {archive_size} bytes "
            f"({env_name('max_compression_ratio')}); refusing it as a compression bomb"
        )


def extract_archive(archive: Path, dest: Path, limits: Limits) -> list[Rejected]:
    """Extract the export's files from ``archive`` into ``dest``; return every member left out, with why."""
    rejected: list[Rejected] = []
    seen: set[str] = set()
    declared = expanded = 0
    archive_size = archive.stat().st_size
    try:
        with contextlib.ExitStack() as stack:
            for member in _members(archive, stack):
                if member.kind == "dir":
                    continue
                declared += member.size if member.kind == "file" else 0
                _check_totals(archive, declared, expanded, archive_size, limits)
                name = safe_name(member.name)
                problem = member_problem(member, name, limits)
                if problem is None and role(name) is None:
                    continue  # not part of an export: ignored, as the same file in a folder export is
                if problem is None and name in seen:
                    problem = Rejected("duplicate_archive_member", "the name occurs twice", name=member.name)
                if problem is not None:
                    rejected.append(problem)
                    continue
                seen.add(name)
                expanded += member.size
                _check_totals(archive, declared, expanded, archive_size, limits)
                if (problem := _extract_one(member, name, dest)) is not None:
                    rejected.append(problem)
    except _UNREADABLE_ARCHIVE as err:
        reason = (str(err).splitlines() or [type(err).__name__])[0][:200]
        raise SourceError(f"{archive.name}: not a readable .zip or tar archive ({reason})") from None
    return rejected

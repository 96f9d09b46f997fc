"""Where an export comes from: a local folder, a .zip/tar archive, or an ``s3://`` prefix.

:func:`open_source` hands ingest a local folder holding ``genres.csv`` (and usually ``posters/``) plus what was
rejected on the way (unsafe archive members, over-cap objects). Archives and S3 exports go into a locked work
folder that is removed on the way out, and a SIGTERM or a later sweep if the process was killed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

from postergenre.archives import extract_archive
from postergenre.cleanup import work_dir
from postergenre.exportfs import NotRegular, TooLarge, kind_of, read_regular
from postergenre.limits import Limits, env_name
from postergenre.storage import open_store
from postergenre.validation import Rejected, SourceError, poster_id_from_name

_ARCHIVE_SUFFIXES = (".zip", ".tar.gz", ".tgz", ".tar", ".tar.bz2", ".tar.xz")


def _download_s3_export(source: str, dest: Path, limits: Limits, concurrency: int) -> list[Rejected]:
    """Download ``genres.csv`` and the posters, judging each object by its listed size before fetching it."""
    store = open_store(source, concurrency=concurrency)
    store.check()
    csv = store.head("genres.csv")
    if csv is None:
        raise SourceError(f"{source}: no genres.csv under this prefix")
    if csv.size > limits.csv_bytes:
        raise SourceError(
            f"{source}: genres.csv is {csv.size} bytes, over the cap of {limits.csv_bytes} "
            f"({env_name('max_csv_bytes')})"
        )
    items = [("genres.csv", dest / "genres.csv")]
    rejected: list[Rejected] = []
    total = csv.size
    for info in store.list("posters/"):
        name = info.key.removeprefix("posters/")
        if "/" in name or poster_id_from_name(name) is None:
            rejected.append(Rejected("bad_poster_name", "not <digits>.jpg/.png", name=info.key))
        elif info.size > limits.poster_bytes:
            detail = (
                f"{info.size} bytes, over the cap of {limits.poster_bytes} ({env_name('max_poster_bytes')})"
            )
            rejected.append(Rejected("poster_too_large", detail, name=info.key, size=info.size))
        else:
            items.append((info.key, dest / "posters" / name))
            total += info.size
    if total > limits.archive_bytes:
        raise SourceError(
            f"{source}: the export holds {total} bytes, over the cap of {limits.archive_bytes} "
            f"({env_name('max_archive_bytes')})"
        )
    store.download_files(items)
    return rejected


def _is_archive(path: Path) -> bool:
    return path.name.lower().endswith(_ARCHIVE_SUFFIXES)


@contextmanager
def open_source(
    source: str, *, limits: Limits | None = None, concurrency: int = 32
) -> Iterator[tuple[Path, list[Rejected]]]:
    """Yield a local folder holding ``genres.csv`` for any kind of source, and what was rejected getting it."""
    limits = limits or Limits()
    if source.startswith("s3://"):
        with work_dir() as tmp:
            rejected = _download_s3_export(source, tmp, limits, concurrency)
            yield tmp, rejected
        return
    path = Path(source.removeprefix("file://")).expanduser()
    if not os.path.lexists(path):
        raise SourceError(f"source {source} does not exist")
    if path.is_dir():
        yield export_root(path), []
        return
    if path.is_file() and _is_archive(path):
        with work_dir() as tmp:
            rejected = extract_archive(path, tmp, limits)
            yield export_root(tmp, rejected), rejected
        return
    raise SourceError(f"source {source}: expected a folder, a .zip/.tar.gz export or an s3:// prefix")


def export_root(folder: Path, rejected: Sequence[Rejected] = ()) -> Path:
    """The folder holding genres.csv: the folder itself or its shallowest descendant (archives nest one level).

    Found without following links, so a linked folder cannot make the export reach outside itself.
    """
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        if "genres.csv" in filenames or "genres.csv" in dirnames:
            found.append(Path(dirpath) / "genres.csv")
    if not found:
        raise SourceError(f"{folder}: no genres.csv in the export{_why_missing(rejected)}")
    return min(found, key=lambda p: (len(p.parts), str(p))).parent


def _why_missing(rejected: Sequence[Rejected]) -> str:
    """The reason an archive's genres.csv was left out, when it was (corrupt, over a cap, a link...)."""
    for item in rejected:
        if item.name and item.name.replace("\\", "/").rsplit("/", 1)[-1] == "genres.csv":
            return f" (the archive's {item.name} was rejected: {item.reason}, {item.detail})"
    return ""


def read_genres_csv(root: Path, limits: Limits) -> bytes:
    """The bytes of ``root/genres.csv``: a regular file (not a link, folder or FIFO) within the CSV cap."""
    path = root / "genres.csv"
    try:
        return read_regular(path, limits.csv_bytes)
    except NotRegular as err:
        raise SourceError(f"genres.csv is {err.kind}, not a regular file: refusing to read it") from None
    except TooLarge as err:
        raise SourceError(
            f"genres.csv is {err.size} bytes, over the cap of {err.cap} ({env_name('max_csv_bytes')})"
        ) from None
    except OSError as err:
        kind = ""
        with suppress(OSError):
            kind = f" ({kind_of(path.lstat().st_mode)})"
        raise SourceError(f"cannot read genres.csv{kind}: {err.strerror or err}") from None

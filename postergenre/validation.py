"""Validation of a raw letterboxd export: the ``genres.csv`` rows and the poster files.

Pure functions over bytes and names, so every rule is unit-testable without a store. Nothing is dropped
silently: every input line ends up either as a clean row or as a quarantine entry with a reason.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from dataclasses import dataclass, field

from PIL import Image

from postergenre.genres import normalise_genre

# Ids in the Kaggle letterboxd export are plain decimal integers; anything else (paths, signs, spaces) is hostile
# or broken and must never reach a store key or a file name. They must fit the int64 columns downstream.
_DIGITS_RE = re.compile(r"[0-9]+")
_POSTER_NAME_RE = re.compile(r"([0-9]+)\.(jpe?g|png)", re.IGNORECASE)
MAX_MOVIE_ID = 2**63 - 1
_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class ExportError(ValueError):
    """The export as a whole is unusable (no header, not UTF-8, ...): a one-line reason."""


class SourceError(ExportError):
    """The source export is missing, unreadable, over a cap, or of an unknown kind."""


@dataclass(frozen=True)
class Rejected:
    """One quarantined input item, with where it came from and why."""

    reason: str
    detail: str
    line: int | None = None
    raw: str | None = None
    movie_id: int | None = None
    name: str | None = None
    sha256: str | None = None
    size: int | None = None

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass
class ParsedGenres:
    """Clean, de-duplicated (movie_id, genre) rows in input order, plus everything rejected."""

    rows: list[tuple[int, str]] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    blank_lines: int = 0


def parse_movie_id(text: str) -> int | None:
    """A movie id is ASCII digits up to ``MAX_MOVIE_ID``; anything else (``../x``, ``-1``, ``1e6``, 2**70) is None."""
    digits = text.strip()
    if not _DIGITS_RE.fullmatch(digits):
        return None
    # Strip zeros and check the length first: int() of thousands of digits is slow or refused outright.
    significant = digits.lstrip("0") or "0"
    if len(significant) > len(str(MAX_MOVIE_ID)):
        return None
    value = int(significant)
    return value if value <= MAX_MOVIE_ID else None


def describe_bad_id(text: str) -> str:
    """Why ``text`` is not a movie id, in words: a number too large is not the same mistake as a path."""
    shown = repr(text.strip()[:40]) + ("..." if len(text.strip()) > 40 else "")
    if _DIGITS_RE.fullmatch(text.strip()):
        return f"id {shown} is out of range (max {MAX_MOVIE_ID})"
    return f"id {shown} is not a number"


def _split_line(line: str) -> list[str] | None:
    if '"' not in line:
        return line.split(",")
    try:
        return next(csv.reader([line], strict=True))
    except csv.Error:
        return None


def parse_genres_csv(data: bytes) -> ParsedGenres:
    """Parse ``genres.csv`` line by line (BOM and CRLF tolerated).

    Lines are parsed one at a time on purpose: with a whole-file CSV reader one unclosed quote would swallow
    every following row into a single field, silently losing data.
    """
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ExportError(f"genres.csv is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    lines = text.splitlines()
    if not lines or [c.strip().lower() for c in (_split_line(lines[0]) or [])] != ["id", "genre"]:
        head = lines[0][:60] if lines else ""
        raise ExportError(f"genres.csv must start with the header 'id,genre', found {head!r}")

    parsed = ParsedGenres()
    seen: set[tuple[int, str]] = set()
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            parsed.blank_lines += 1
            continue
        fields = _split_line(line)
        if fields is None or len(fields) != 2:
            parsed.rejected.append(Rejected("malformed_row", "expected 2 fields: id,genre", number, line))
            continue
        movie_id = parse_movie_id(fields[0])
        if movie_id is None:
            parsed.rejected.append(Rejected("invalid_id", describe_bad_id(fields[0]), number, line))
            continue
        genre = normalise_genre(fields[1])
        if genre is None:
            parsed.rejected.append(
                Rejected("unknown_genre", f"unknown genre {fields[1].strip()!r}", number, line, movie_id)
            )
            continue
        if (movie_id, genre) in seen:
            parsed.rejected.append(
                Rejected("duplicate_row", f"repeats ({movie_id}, {genre})", number, line, movie_id)
            )
            continue
        seen.add((movie_id, genre))
        parsed.rows.append((movie_id, genre))
    return parsed


def poster_id_from_name(name: str) -> int | None:
    """``1000001.jpg`` -> 1000001; any other file name (hostile, wrong extension, nested) -> None."""
    match = _POSTER_NAME_RE.fullmatch(name)
    return parse_movie_id(match.group(1)) if match else None


@dataclass(frozen=True)
class PosterCheck:
    """Outcome of checking one poster's bytes: ``reason`` is None when the poster is a usable image.

    ``sha256`` is None for a file that was never read (over the size cap, a link, unreadable).
    """

    sha256: str | None
    size: int
    format: str | None = None
    width: int | None = None
    height: int | None = None
    reason: str | None = None
    detail: str | None = None


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_poster(
    data: bytes, *, digest: str | None = None, decode: bool = True, max_pixels: int | None = None
) -> PosterCheck:
    """Decide whether ``data`` is a usable JPEG/PNG poster by sniffing its content, not its file name.

    The full entropy-coded stream is decoded (at 1/8 scale for JPEG, which is several times cheaper) so that
    truncated and corrupt files are caught here rather than in a training job. ``decode=False`` trusts the content
    hash was validated before (a re-ingest of a blob already in the store). An image of more than ``max_pixels``
    is refused from its header, before any decoding (a small PNG can expand to gigabytes).
    """
    digest = digest or sha256_bytes(data)
    if not data:
        return PosterCheck(digest, 0, reason="empty_poster", detail="zero-byte file")
    if data.startswith(_JPEG_MAGIC):
        fmt = "jpeg"
    elif data.startswith(_PNG_MAGIC):
        fmt = "png"
    else:
        return PosterCheck(digest, len(data), reason="not_an_image", detail="neither JPEG nor PNG content")
    if not decode:
        return PosterCheck(digest, len(data), format=fmt)
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if max_pixels is not None and width * height > max_pixels:
                return _too_many_pixels(digest, len(data), fmt, width * height, max_pixels)
            if fmt == "jpeg":
                image.draft("RGB", (max(1, width // 8), max(1, height // 8)))
            image.load()
    except Image.DecompressionBombError as exc:  # PIL's own, higher, cap
        return PosterCheck(digest, len(data), format=fmt, reason="too_many_pixels", detail=str(exc)[:200])
    except Exception as exc:  # PIL raises many types (OSError, SyntaxError, ValueError) for broken files
        return PosterCheck(digest, len(data), format=fmt, reason="corrupt_poster", detail=str(exc)[:200])
    return PosterCheck(digest, len(data), format=fmt, width=width, height=height)


def _too_many_pixels(digest: str, size: int, fmt: str, pixels: int, cap: int) -> PosterCheck:
    detail = f"{pixels} pixels, over the cap of {cap} (POSTERGENRE_MAX_IMAGE_PIXELS)"
    return PosterCheck(digest, size, format=fmt, reason="too_many_pixels", detail=detail)


def decode_cost(head: bytes, max_pixels: int) -> int:
    """Bytes of memory that decoding the image starting with ``head`` needs, from its header alone.

    JPEG is decoded at 1/8 scale (1/64 of the pixels); an image over ``max_pixels`` is never decoded (0); a
    header that does not parse from ``head`` alone is budgeted at the worst case the cap allows.
    """
    try:
        with Image.open(io.BytesIO(head)) as image:
            width, height = image.size
            fmt = image.format
    except Exception:  # too short a head, or not an image: assume the worst the cap allows
        return max_pixels * 4
    pixels = width * height
    if pixels > max_pixels:
        return 0
    return pixels * 4 // 64 if fmt == "JPEG" else pixels * 4

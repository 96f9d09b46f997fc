"""What can be known about a poster without decoding it, and without TensorFlow: its file, its header (size,
EXIF orientation) and whether the caps allow decoding it. ``images`` decodes what passes; prediction checks a
batch of posters here first, so bad ones fail fast without loading TensorFlow or a model.
"""

from __future__ import annotations

import io
import re
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

_EXIF_ORIENTATION = 0x0112
_HEADER_THREADS = 8
REFUSED = 0
"""Orientation code given to a poster whose header declares too many pixels: it is never decoded."""


class PosterError(ValueError):
    """One poster cannot be used; the message is one line naming it and saying why."""


def default_max_pixels(max_pixels: int | None) -> int:
    if max_pixels is not None:
        return max_pixels
    from postergenre.config import get_settings

    return get_settings().max_image_pixels


def read_header(source: str | Path | bytes) -> tuple[int, int, int]:
    """``(width, height, EXIF orientation 1..8)`` from an image's header, without decoding its pixels.

    Raises PIL's errors for what is not an image, and ``Image.DecompressionBombError`` for sizes PIL itself
    refuses to open (over twice its own ~89 MP limit).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the caller applies its own cap
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as img:
            return img.width, img.height, _orientation(img.info.get("exif"))


def _orientation(raw: bytes | None) -> int:
    if not raw:
        return 1
    try:
        exif = Image.Exif()
        exif.load(raw)
        value = exif.get(_EXIF_ORIENTATION, 1)
    except Exception:  # a broken EXIF block is no reason to lose the poster: PIL raises many types for it
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _pipeline_orientation(path: str, max_pixels: int) -> int:
    """Orientation for the pipelines, or REFUSED. A header PIL cannot read is left to TensorFlow's decode,
    which then skips the poster or not exactly as it did before headers were read."""
    try:
        width, height, orientation = read_header(path)
    except Image.DecompressionBombError:
        return REFUSED
    except Exception:  # OSError, SyntaxError, ValueError, ...: TF's decode decides
        return 1
    return REFUSED if width * height > max_pixels else orientation


def read_orientations(paths: Sequence[str], max_pixels: int | None) -> np.ndarray:
    """Each poster's orientation (REFUSED over the pixels cap), headers read in parallel."""
    cap = default_max_pixels(max_pixels)
    with ThreadPoolExecutor(_HEADER_THREADS) as pool:
        found = pool.map(lambda p: _pipeline_orientation(p, cap), paths)
        return np.fromiter(found, dtype=np.int32, count=len(paths))


def _read_poster(source: str | Path | bytes, max_bytes: int | None) -> bytes:
    if isinstance(source, bytes):
        data = source
    else:
        path = Path(source)
        if path.is_dir():
            raise PosterError(f"poster {path} is a directory, not an image file")
        if not path.is_file():
            raise PosterError(
                f"poster {path} does not exist" if not path.exists() else f"poster {path} is not a file"
            )
        if max_bytes is not None and path.stat().st_size > max_bytes:
            raise PosterError(
                f"poster {path} is {path.stat().st_size} bytes, over the cap of {max_bytes} "
                "(POSTERGENRE_MAX_POSTER_BYTES)"
            )
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise PosterError(f"poster {path} cannot be read ({exc.strerror or exc})") from None
    if not data:
        raise PosterError(f"{poster_name(source)} is empty (0 bytes)")
    return data


_MAGIC = {b"\xff\xd8\xff": "JPEG", b"\x89PNG\r\n\x1a\n": "PNG", b"GIF8": "GIF", b"BM": "BMP"}


def claimed_format(data: bytes) -> str | None:
    """The format the first bytes claim, to tell a broken image from something that never was one."""
    return next((fmt for magic, fmt in _MAGIC.items() if data.startswith(magic)), None)


def poster_name(source: str | Path | bytes) -> str:
    return "poster" if isinstance(source, bytes) else f"poster {source}"


def check_poster(
    source: str | Path | bytes, *, max_pixels: int | None = None, max_bytes: int | None = None
) -> int:
    """Everything but the decode: the file, its size and its header; returns its EXIF orientation.

    Raises PosterError: a directory, missing, unreadable or empty file, more than ``max_bytes`` bytes, not an
    image PIL knows, or more than ``max_pixels`` pixels (default: the ``max_image_pixels`` setting).
    """
    return checked(source, max_pixels, max_bytes)[1]


def checked(source: str | Path | bytes, max_pixels: int | None, max_bytes: int | None) -> tuple[bytes, int]:
    data = _read_poster(source, max_bytes)
    cap = default_max_pixels(max_pixels)
    try:
        width, height, orientation = read_header(data)
    except Image.DecompressionBombError as exc:  # PIL's own limit, far above ours: its message has the count
        declared = re.search(r"\((\d+) pixels\)", str(exc))
        raise PosterError(
            f"{poster_name(source)} declares {declared[1] if declared else 'too many'} pixels, over the cap of {cap} "
            "(POSTERGENRE_MAX_IMAGE_PIXELS); it was not decoded"
        ) from None
    except Exception as exc:  # PIL raises UnidentifiedImageError, SyntaxError, ValueError, ... for junk
        what = claimed_format(data)
        detail = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        if isinstance(exc, Image.UnidentifiedImageError):  # its message names an internal BytesIO object
            detail = "PIL knows no such image format"
        problem = f"is a truncated or corrupt {what}" if what else "is not an image"
        raise PosterError(f"{poster_name(source)} {problem} ({detail})") from None
    if width * height > cap:
        raise PosterError(
            f"{poster_name(source)} is {width}x{height} = {width * height} pixels, over the cap of {cap} "
            "(POSTERGENRE_MAX_IMAGE_PIXELS); it was not decoded"
        )
    return data, orientation

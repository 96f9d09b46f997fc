"""A poster as the model sees it, in NumPy and PIL only: decode, EXIF orientation, letterbox to a square.

The same arithmetic as the ``tf.data`` pipeline's ``images.letterbox`` (TensorFlow's ResizeBilinear with
half-pixel centres, float32, black bars), so tasks that score a handful of posters (the artefact check before
promotion) need not import TensorFlow. ``tests/test_pixels.py`` holds the two to the same pixels.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps


def _axis(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source rows (or columns) and weights of TF's half-pixel bilinear resize along one axis."""
    scale = np.float32(in_size) / np.float32(out_size)
    position = (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
    floor = np.floor(position)
    lower = np.maximum(floor, 0).astype(np.int64)
    upper = np.minimum(np.ceil(position), in_size - 1).astype(np.int64)
    return lower, upper, (position - floor).astype(np.float32)


def resize_bilinear(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """``tf.raw_ops.ResizeBilinear(half_pixel_centers=True)`` of an (h, w, c) float32 array."""
    top_i, bottom_i, y_lerp = _axis(image.shape[0], height)
    left_i, right_i, x_lerp = _axis(image.shape[1], width)
    x_lerp = x_lerp[None, :, None]
    top, bottom = image[top_i], image[bottom_i]
    top = top[:, left_i] + (top[:, right_i] - top[:, left_i]) * x_lerp
    bottom = bottom[:, left_i] + (bottom[:, right_i] - bottom[:, left_i]) * x_lerp
    return top + (bottom - top) * y_lerp[:, None, None]


def letterbox_array(image: np.ndarray, image_size: int) -> np.ndarray:
    """Fit an (h, w, 3) image into image_size x image_size, centred, padded with black: images.letterbox."""
    size = np.array(image.shape[:2], dtype=np.float32)
    scaled = size / np.max(size / np.float32(image_size))
    new = np.maximum(1, np.floor(scaled).astype(np.int64))
    pad = np.maximum(0, np.floor((np.float32(image_size) - scaled) / 2).astype(np.int64))
    out = np.zeros((image_size, image_size, 3), dtype=np.float32)
    resized = resize_bilinear(image.astype(np.float32), int(new[0]), int(new[1]))
    out[pad[0] : pad[0] + new[0], pad[1] : pad[1] + new[1]] = resized[: image_size - pad[0], : image_size - pad[1]]
    return np.clip(out, 0.0, 255.0)


def decode_poster(data: bytes, max_pixels: int) -> np.ndarray:
    """RGB pixels of a poster (EXIF orientation applied) as float32; ValueError for what is not a usable
    image, including one whose header declares more than ``max_pixels`` pixels (checked before decoding)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own cap applies
        try:
            with Image.open(io.BytesIO(data)) as img:
                if img.width * img.height > max_pixels:
                    raise ValueError(f"{img.width}x{img.height} pixels is over the cap of {max_pixels}")
                return np.asarray(ImageOps.exif_transpose(img).convert("RGB"), dtype=np.float32)
        except (OSError, SyntaxError, Image.DecompressionBombError) as exc:
            raise ValueError(f"not a decodable image ({exc})") from None


def poster_batch(blobs: list[bytes], image_size: int, max_pixels: int) -> np.ndarray:
    """(n, image_size, image_size, 3) float32 posters, ready for a backbone+head model."""
    return np.stack([letterbox_array(decode_poster(b, max_pixels), image_size) for b in blobs])

"""Poster input pipeline: decode, letterbox to a square, batch and prefetch with ``tf.data``.

The report (section 1.2) scales posters to 224x224 *without changing their aspect ratio*: here the poster is
resized to fit the square and padded with black bars (``tf.image.resize_with_pad``). Pixels stay float32 in
0..255 because every backbone in ``models.py`` carries its own preprocessing.

A poster that cannot be decoded (zero bytes, truncated, corrupt, not an image, missing) is skipped and
counted, never fatal: one bad file among 150k must not kill a training run. Ingest validates posters already;
this is the last line of defence, and the count it reports is exact. For a single poster (``load_image``,
used by prediction) the same cases raise PosterError with a one-line reason instead.

Pixels cap. A 48 KB PNG can declare 20000x20000 pixels (1.2 GB decoded). Every poster's header is read with PIL
first (nothing decoded) and one of more than ``max_image_pixels`` pixels (the setting ingest quarantines by) is
refused before any decode: skipped in the pipelines, a PosterError in ``load_image``.

EXIF orientation. Phone-made posters may store their pixels sideways plus an EXIF Orientation tag. The same
header read takes the tag, and ``letterbox`` applies it (as ``PIL.ImageOps.exif_transpose`` would, bit for bit)
right after decoding, in training, embedding and prediction alike, so a model sees a poster the way a viewer
does, whichever path it took. Only posters carrying a tag other than 1 change; a tag in a PNG's eXIf chunk
after the image data is not seen (PIL would have to decode the image to find it).
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf
from PIL import Image

from postergenre.image_checks import (  # re-exported: callers import the pipeline's checks from here too
    REFUSED,
    PosterError,
    check_poster,
    checked,
    claimed_format,
    poster_name,
    read_header,
    read_orientations,
)

__all__ = [
    "REFUSED",
    "DecodeStats",
    "PosterError",
    "check_poster",
    "indexed_dataset",
    "letterbox",
    "load_image",
    "make_dataset",
    "orient",
    "read_header",
    "scan_decodable",
    "decode_resize_reference",
]

AUTOTUNE = tf.data.AUTOTUNE


@dataclass(frozen=True)
class DecodeStats:
    """How many posters were asked for and which (by position in the input list) could not be decoded."""

    total: int
    skipped_indices: tuple[int, ...]

    @property
    def skipped(self) -> int:
        return len(self.skipped_indices)

    @property
    def kept(self) -> int:
        return self.total - self.skipped

    def kept_mask(self) -> np.ndarray:
        mask = np.ones(self.total, dtype=bool)
        mask[list(self.skipped_indices)] = False
        return mask

    def to_dict(self) -> dict:
        return {"total": self.total, "kept": self.kept, "skipped": self.skipped}


# ---------------------------------------------------------------------------------------------- decoding


def _transpose(image: tf.Tensor) -> tf.Tensor:
    return tf.transpose(image, [1, 0, 2])


def orient(image: tf.Tensor, orientation: tf.Tensor | int) -> tf.Tensor:
    """Undo EXIF orientation ``orientation`` (1..8) of a decoded HxWx3 image: ``ImageOps.exif_transpose``."""
    branches = [
        lambda: image,  # 0 is never passed; kept so the index is the tag itself
        lambda: image,  # 1: upright
        lambda: tf.reverse(image, [1]),  # 2: mirrored left-right
        lambda: tf.reverse(image, [0, 1]),  # 3: rotated 180
        lambda: tf.reverse(image, [0]),  # 4: mirrored top-bottom
        lambda: _transpose(image),  # 5: transposed
        lambda: tf.reverse(_transpose(image), [1]),  # 6: needs 90 degrees clockwise
        lambda: tf.reverse(_transpose(image), [0, 1]),  # 7: transversed
        lambda: tf.reverse(_transpose(image), [0]),  # 8: needs 90 degrees counter-clockwise
    ]
    index = tf.clip_by_value(tf.cast(orientation, tf.int32), 1, 8)
    return tf.switch_case(index, branches)


def letterbox(data: tf.Tensor, image_size: int, orientation: tf.Tensor | int = 1) -> tf.Tensor:
    """Encoded JPEG/PNG bytes (a scalar string tensor) -> float32 ``(image_size, image_size, 3)`` in 0..255.

    Graph-friendly (used inside ``Dataset.map``); raises ``InvalidArgumentError`` on undecodable bytes.
    ``expand_animations=False`` keeps the result 3-D even for a GIF (its first frame).

    The arithmetic and kernels of ``tf.image.resize_with_pad`` (bilinear, half-pixel centres; the output is
    bit for bit the same) without its dozens of shape checks per poster, and on the decoded uint8 pixels
    (the kernel converts each to float as it reads it). One difference: a side never shrinks below one
    pixel, so a very thin poster that decodes also letterboxes (``resize_with_pad`` fails on it), and
    ``scan_decodable``'s promise holds for every decodable poster.
    """
    image = orient(tf.io.decode_image(data, channels=3, expand_animations=False), orientation)
    size = tf.cast(tf.shape(image)[:2], tf.float32)
    scaled = size / tf.reduce_max(size / image_size)
    new = tf.maximum(1, tf.cast(tf.floor(scaled), tf.int32))
    pad = tf.maximum(0, tf.cast(tf.floor((image_size - scaled) / 2), tf.int32))
    resized = tf.raw_ops.ResizeBilinear(images=image[None], size=new, half_pixel_centers=True)[0]
    padding = [[pad[0], image_size - pad[0] - new[0]], [pad[1], image_size - pad[1] - new[1]], [0, 0]]
    image = tf.ensure_shape(tf.pad(resized, padding), (image_size, image_size, 3))
    return tf.clip_by_value(image, 0.0, 255.0)  # bilinear never overshoots, but keep the contract explicit


def load_image(
    path_or_bytes: str | Path | bytes,
    image_size: int,
    *,
    max_pixels: int | None = None,
    max_bytes: int | None = None,
) -> np.ndarray:
    """One poster, eagerly (serving, notebooks): a file path or the encoded bytes -> float32 HxWx3 array.

    ``check_poster`` runs first, so nothing is decoded that the caps refuse; a poster that passes it and still
    fails to decode (truncated, corrupt data) raises PosterError too.
    """
    data, orientation = checked(path_or_bytes, max_pixels, max_bytes)
    try:
        return letterbox(tf.constant(data), image_size, orientation).numpy()
    except tf.errors.InvalidArgumentError as exc:  # the header was fine, the pixel data is not
        # TF prefixes the op's node name ({{function_node ...}}): noise to whoever reads the message.
        reason = re.sub(r"\{\{.*?\}\}\s*", "", str(exc.message or "decode failed")).splitlines()[0]
        reason = re.sub(r"\s*\[Op:\w+\].*$", "", reason)[:120]  # and the eager op's name as a suffix
        what = claimed_format(data) or "image"
        raise PosterError(
            f"{poster_name(path_or_bytes)} is a truncated or corrupt {what} ({reason})"
        ) from None


def _as_strings(paths: Sequence[str | Path]) -> list[str]:
    return [str(p) for p in paths]


def indexed_dataset(
    paths: Sequence[str | Path], *, image_size: int, batch_size: int, max_pixels: int | None = None
) -> tf.data.Dataset:
    """Batches of ``(index, image)`` in input order; undecodable posters (and those over the pixels cap)
    silently dropped.

    The index says which input each image came from, so a consumer that needs to know what was dropped
    (``features.embed``) finds out in the same single pass, without decoding anything twice.
    """
    strings = _as_strings(paths)
    orientations = read_orientations(strings, max_pixels)
    keep = np.flatnonzero(orientations != REFUSED)
    ds = tf.data.Dataset.from_tensor_slices(
        (
            tf.constant(keep, dtype=tf.int64),
            tf.constant([strings[i] for i in keep], dtype=tf.string),
            tf.constant(orientations[keep], dtype=tf.int32),
        )
    )
    ds = ds.map(
        lambda i, p, o: (i, letterbox(tf.io.read_file(p), image_size, o)),
        num_parallel_calls=AUTOTUNE,
        deterministic=True,
    ).ignore_errors()
    return ds.batch(batch_size).prefetch(AUTOTUNE)


def scan_decodable(paths: Sequence[str | Path], *, max_pixels: int | None = None) -> DecodeStats:
    """Decode every poster once (in parallel, no resize) and report exactly which ones fail.

    It runs the very decode op that ``letterbox`` runs, so a poster that passes here decodes in the pipeline.
    A poster whose header declares more than ``max_pixels`` pixels counts as failed and is never decoded.
    """
    strings = _as_strings(paths)
    return _scan(strings, read_orientations(strings, max_pixels))


def _scan(paths: list[str], orientations: np.ndarray) -> DecodeStats:
    if not paths:
        return DecodeStats(0, ())
    candidates = np.flatnonzero(orientations != REFUSED)
    ds = tf.data.Dataset.from_tensor_slices(
        (
            tf.constant(candidates, dtype=tf.int64),
            tf.constant([paths[i] for i in candidates], dtype=tf.string),
        )
    )
    # The decoded shape travels to Python (and is dropped there) so that the decode cannot be pruned away.
    ds = ds.map(
        lambda i, p: (
            i,
            tf.shape(tf.io.decode_image(tf.io.read_file(p), channels=3, expand_animations=False)),
        ),
        num_parallel_calls=AUTOTUNE,
        deterministic=False,
    ).ignore_errors()
    kept = {int(i) for batch, _ in ds.batch(4096).as_numpy_iterator() for i in batch}
    return DecodeStats(len(paths), tuple(i for i in range(len(paths)) if i not in kept))


def make_dataset(
    paths: Sequence[str | Path],
    labels: np.ndarray | None,
    *,
    image_size: int,
    batch_size: int,
    shuffle_seed: int | None = None,
    max_pixels: int | None = None,
) -> tuple[tf.data.Dataset, DecodeStats]:
    """A ``tf.data`` pipeline of letterboxed posters (with their label rows when ``labels`` is given).

    Undecodable posters are found by a first parallel pass (``scan_decodable``) and left out of the dataset,
    so the returned ``DecodeStats`` is exact *before* any training starts, labels stay aligned, and the
    dataset's length is known. Order is the input order unless ``shuffle_seed`` is given (reshuffled each
    epoch, reproducibly for a seed). Images are decoded lazily per batch, in parallel, and prefetched.
    """
    if labels is not None and len(labels) != len(paths):
        raise ValueError(f"{len(paths)} posters but {len(labels)} label rows")
    strings = _as_strings(paths)
    orientations = read_orientations(strings, max_pixels)
    stats = _scan(strings, orientations)
    keep = np.flatnonzero(stats.kept_mask())
    kept = (
        tf.constant([strings[i] for i in keep], dtype=tf.string),
        tf.constant(orientations[keep], dtype=tf.int32),
    )
    if labels is None:
        ds = tf.data.Dataset.from_tensor_slices(kept)
    else:
        ds = tf.data.Dataset.from_tensor_slices((*kept, np.asarray(labels)[keep]))
    if shuffle_seed is not None and len(keep):
        ds = ds.shuffle(len(keep), seed=shuffle_seed, reshuffle_each_iteration=True)

    def decode(path, orientation, *label):
        image = letterbox(tf.io.read_file(path), image_size, orientation)
        return (image, *label) if label else image

    # The length is declared so Keras knows the steps per epoch. Snapshots are immutable: should a poster
    # still change after the scan, it is dropped and the epoch then fails loudly on the length, not silently.
    ds = ds.map(decode, num_parallel_calls=AUTOTUNE, deterministic=True).ignore_errors()
    ds = ds.batch(batch_size).apply(tf.data.experimental.assert_cardinality(-(-len(keep) // batch_size)))
    return ds.prefetch(AUTOTUNE), stats


def decode_resize_reference(paths: Sequence[str | Path], image_size: int) -> np.ndarray:
    """The naive benchmark baseline: a sequential PIL decode + letterbox loop (undecodable ones skipped)."""
    images = []
    for path in paths:
        try:
            with Image.open(io.BytesIO(Path(path).read_bytes())) as img:
                rgb = img.convert("RGB")
        except (OSError, ValueError, Image.DecompressionBombError):
            continue
        scale = image_size / max(rgb.size)
        size = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
        canvas = Image.new("RGB", (image_size, image_size))
        canvas.paste(
            rgb.resize(size, Image.BILINEAR), ((image_size - size[0]) // 2, (image_size - size[1]) // 2)
        )
        images.append(np.asarray(canvas, dtype=np.float32))
    return np.stack(images) if images else np.zeros((0, image_size, image_size, 3), np.float32)

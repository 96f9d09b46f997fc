"""Poster input pipeline: decode, letterbox to a square, batch and prefetch with ``tf.data``.

The report (section 1.2) scales posters to 224x224 *without changing their aspect ratio*: here the poster is
resized to fit the square and padded with black bars (``tf.image.resize_with_pad``). Pixels stay float32 in
0..255 because every backbone in ``models.py`` carries its own preprocessing.

A poster that cannot be decoded (zero bytes, truncated, corrupt, not an image, missing) is skipped and
counted, never fatal: one bad file among 150k must not kill a training run. Ingest validates posters already;
this is the last line of defence, and the count it reports is exact.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf
from PIL import Image

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


def letterbox(data: tf.Tensor, image_size: int) -> tf.Tensor:
    """Encoded JPEG/PNG bytes (a scalar string tensor) -> float32 ``(image_size, image_size, 3)`` in 0..255.

    Graph-friendly (used inside ``Dataset.map``); raises ``InvalidArgumentError`` on undecodable bytes.
    ``expand_animations=False`` keeps the result 3-D even for a GIF (its first frame).

    The arithmetic and kernels of ``tf.image.resize_with_pad`` (bilinear, half-pixel centres; the output is
    bit for bit the same) without its dozens of shape checks per poster, and on the decoded uint8 pixels
    (the kernel converts each to float as it reads it). One difference: a side never shrinks below one
    pixel, so a very thin poster that decodes also letterboxes (``resize_with_pad`` fails on it), and
    ``scan_decodable``'s promise holds for every decodable poster.
    """
    image = tf.io.decode_image(data, channels=3, expand_animations=False)
    size = tf.cast(tf.shape(image)[:2], tf.float32)
    scaled = size / tf.reduce_max(size / image_size)
    new = tf.maximum(1, tf.cast(tf.floor(scaled), tf.int32))
    pad = tf.maximum(0, tf.cast(tf.floor((image_size - scaled) / 2), tf.int32))
    resized = tf.raw_ops.ResizeBilinear(images=image[None], size=new, half_pixel_centers=True)[0]
    padding = [[pad[0], image_size - pad[0] - new[0]], [pad[1], image_size - pad[1] - new[1]], [0, 0]]
    image = tf.ensure_shape(tf.pad(resized, padding), (image_size, image_size, 3))
    return tf.clip_by_value(image, 0.0, 255.0)  # bilinear never overshoots, but keep the contract explicit


def load_image(path_or_bytes: str | Path | bytes, image_size: int) -> np.ndarray:
    """One poster, eagerly (serving, notebooks): a file path or the encoded bytes -> float32 HxWx3 array."""
    data = path_or_bytes if isinstance(path_or_bytes, bytes) else Path(path_or_bytes).read_bytes()
    return letterbox(tf.constant(data), image_size).numpy()


def _as_strings(paths: Sequence[str | Path]) -> list[str]:
    return [str(p) for p in paths]


def indexed_dataset(paths: Sequence[str | Path], *, image_size: int, batch_size: int) -> tf.data.Dataset:
    """Batches of ``(index, image)`` in input order; undecodable posters silently dropped.

    The index says which input each image came from, so a consumer that needs to know what was dropped
    (``features.embed``) finds out in the same single pass, without decoding anything twice.
    """
    indices = tf.range(len(paths), dtype=tf.int64)
    ds = tf.data.Dataset.from_tensor_slices((indices, tf.constant(_as_strings(paths), dtype=tf.string)))
    ds = ds.map(
        lambda i, p: (i, letterbox(tf.io.read_file(p), image_size)),
        num_parallel_calls=AUTOTUNE,
        deterministic=True,
    ).ignore_errors()
    return ds.batch(batch_size).prefetch(AUTOTUNE)


def scan_decodable(paths: Sequence[str | Path]) -> DecodeStats:
    """Decode every poster once (in parallel, no resize) and report exactly which ones fail.

    It runs the very decode op that ``letterbox`` runs, so a poster that passes here decodes in the pipeline.
    """
    if not paths:
        return DecodeStats(0, ())
    indices = tf.range(len(paths), dtype=tf.int64)
    ds = tf.data.Dataset.from_tensor_slices((indices, tf.constant(_as_strings(paths), dtype=tf.string)))
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
) -> tuple[tf.data.Dataset, DecodeStats]:
    """A ``tf.data`` pipeline of letterboxed posters (with their label rows when ``labels`` is given).

    Undecodable posters are found by a first parallel pass (``scan_decodable``) and left out of the dataset,
    so the returned ``DecodeStats`` is exact *before* any training starts, labels stay aligned, and the
    dataset's length is known. Order is the input order unless ``shuffle_seed`` is given (reshuffled each
    epoch, reproducibly for a seed). Images are decoded lazily per batch, in parallel, and prefetched.
    """
    if labels is not None and len(labels) != len(paths):
        raise ValueError(f"{len(paths)} posters but {len(labels)} label rows")
    stats = scan_decodable(paths)
    keep = np.flatnonzero(stats.kept_mask())
    kept_paths = tf.constant([str(paths[i]) for i in keep], dtype=tf.string)
    if labels is None:
        ds = tf.data.Dataset.from_tensor_slices(kept_paths)
    else:
        ds = tf.data.Dataset.from_tensor_slices((kept_paths, np.asarray(labels)[keep]))
    if shuffle_seed is not None and len(keep):
        ds = ds.shuffle(len(keep), seed=shuffle_seed, reshuffle_each_iteration=True)

    def decode(path, *label):
        image = letterbox(tf.io.read_file(path), image_size)
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

"""Embed once, train many: pooled backbone features of every poster, computed once and cached in the store.

The backbone is frozen (report, section 2), so its output for a poster never changes: every tuning trial, the
multi-class CNN and all 19 one-vs-all heads can train on the cached vectors instead of re-decoding and
re-convolving 150k posters per epoch per model. ``tests/test_features.py`` shows that training a head on the
cached features gives the same head as training backbone+head end to end with the backbone frozen.

Features are stored as float16 (half the bytes; EfficientNetV2B0 gives 1280 floats per poster) and upcast to
float32 to train; the only difference from the float32 vectors is that rounding (relative 2**-11).
"""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np

from postergenre.images import DecodeStats, indexed_dataset
from postergenre.models import build_backbone
from postergenre.snapshots import validate_snapshot_id
from postergenre.storage import ObjectStore

# Bump when the letterbox, the backbones' preprocessing or the file layout changes: old caches then miss.
CACHE_VERSION = "v1"
_SPLIT_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")


def embed_with(
    backbone: keras.Model,
    paths: Sequence[str | Path],
    *,
    image_size: int,
    batch_size: int,
    dtype: type = np.float16,
) -> tuple[np.ndarray, np.ndarray, DecodeStats]:
    """Run ``backbone`` (inference mode) over the posters in one pass: features of the decodable ones.

    Returns ``(features[n_kept, d], kept_mask[n], stats)``; row ``k`` of ``features`` belongs to the ``k``-th
    True entry of ``kept_mask``. ``dtype`` is float16 for the cache (float32 only to prove equivalence).
    """
    chunks: list[np.ndarray] = []
    kept = np.zeros(len(paths), dtype=bool)
    for indices, images in indexed_dataset(
        paths, image_size=image_size, batch_size=batch_size
    ).as_numpy_iterator():
        chunks.append(np.asarray(backbone.predict_on_batch(images), dtype=np.float32).astype(dtype))
        kept[indices] = True
    width = int(backbone.output_shape[-1])
    features = np.concatenate(chunks) if chunks else np.zeros((0, width), dtype)
    stats = DecodeStats(len(paths), tuple(int(i) for i in np.flatnonzero(~kept)))
    return features, kept, stats


def embed(
    paths: Sequence[str | Path],
    *,
    backbone_name: str,
    weights: str | Path | None,
    image_size: int,
    batch_size: int,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, DecodeStats]:
    """Build the backbone and embed the posters: ``(float16 features[n_kept, d], kept_mask[n], stats)``."""
    backbone = build_backbone(backbone_name, weights=weights, image_size=image_size, seed=seed)
    return embed_with(backbone, paths, image_size=image_size, batch_size=batch_size)


def weights_id(weights: str | Path | None) -> str:
    """Identity of a backbone's weights for cache keys: ``imagenet``, ``none``, or the file's sha256."""
    if weights is None or (isinstance(weights, str) and weights.lower() == "none"):
        return "none"
    if weights == "imagenet":
        return "imagenet"
    digest = hashlib.sha256()
    with Path(weights).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return f"sha256-{digest.hexdigest()}"


def feature_cache_key(snapshot_id: str, backbone_name: str, weights_id: str, image_size: int) -> str:
    """Store prefix of one snapshot's features: everything that changes the vectors is in the key."""
    validate_snapshot_id(snapshot_id)
    for part in (backbone_name, weights_id):
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", part):
            raise ValueError(f"invalid feature cache key component {part!r}")
    if image_size < 1:
        raise ValueError(f"image_size must be positive, got {image_size}")
    return f"features/{CACHE_VERSION}/{snapshot_id}/{backbone_name}/{weights_id}/{image_size}px"


def _object_key(key: str, split: str) -> str:
    if not _SPLIT_RE.fullmatch(split):
        raise ValueError(f"invalid split name {split!r}")
    return f"{key}/{split}.npz"


def save_features(
    store: ObjectStore, key: str, split: str, movie_ids: np.ndarray, features: np.ndarray
) -> str:
    """Write one split's ``(movie_ids, features)`` as an ``.npz`` object (atomic); returns the object key."""
    movie_ids = np.asarray(movie_ids, dtype=np.int64)
    features = np.asarray(features)
    if features.ndim != 2 or movie_ids.shape != (features.shape[0],):
        raise ValueError(f"features {features.shape} do not match movie_ids {movie_ids.shape}")
    buf = io.BytesIO()
    np.savez(buf, movie_ids=movie_ids, features=features)
    object_key = _object_key(key, split)
    store.put_bytes(object_key, buf.getvalue())
    return object_key


def has_features(store: ObjectStore, key: str, split: str) -> bool:
    return store.exists(_object_key(key, split))


def load_features(store: ObjectStore, key: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """``(movie_ids int64[n], features[n, d])`` as saved; raises the store's ``NotFound`` on a cache miss."""
    with np.load(io.BytesIO(store.get_bytes(_object_key(key, split))), allow_pickle=False) as npz:
        return npz["movie_ids"], npz["features"]

"""The feature cache in the store: keys, weights identity and the per-split ``.npz`` objects.

Free of TensorFlow and Keras, so the head tasks (trials, training, evaluation on cached features) can read it
on a light Keras backend; :mod:`postergenre.features` computes what is stored here.
"""

from __future__ import annotations

import hashlib
import io
import re
from pathlib import Path

import numpy as np

from postergenre.snapshots import validate_snapshot_id
from postergenre.storage import ObjectStore

# Bump when the letterbox, the decoding, the backbones' preprocessing or the file layout changes: old caches then
# miss. v2: posters are decoded with their EXIF orientation applied (a v1 cache may hold them unrotated).
CACHE_VERSION = "v2"
_SPLIT_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")


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

"""Embed once, train many: pooled backbone features of every poster, computed once and cached in the store.

The backbone is frozen (report, section 2), so its output for a poster never changes: every tuning trial, the
multi-class CNN and all 19 one-vs-all heads can train on the cached vectors instead of re-decoding and
re-convolving 150k posters per epoch per model. ``tests/test_features.py`` shows that training a head on the
cached features gives the same head as training backbone+head end to end with the backbone frozen.

Features are stored as float16 (half the bytes; EfficientNetV2B0 gives 1280 floats per poster) and upcast to
float32 to train; the only difference from the float32 vectors is that rounding (relative 2**-11).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np

from postergenre.feature_cache import (  # noqa: F401 - the cache API, re-exported for callers
    CACHE_VERSION,
    feature_cache_key,
    has_features,
    load_features,
    save_features,
    weights_id,
)
from postergenre.images import DecodeStats, indexed_dataset
from postergenre.models import build_backbone


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

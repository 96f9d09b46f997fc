"""Stage ``embed``: pooled backbone features of every labelled poster, per split, cached in the store."""

from __future__ import annotations

import hashlib
import time

import numpy as np

from postergenre.config import Settings
from postergenre.labels import SPLITS
from postergenre.log import get_logger
from postergenre.steps.context import load_run
from postergenre.steps.verify import stage_check_posters

log = get_logger(__name__)

UNUSED = "unused"
"""Feature object of the labelled movies in no split, which score the OvA ensemble on true genre lists."""
MAX_UNUSED = 5000
"""At letterboxd scale undersampling leaves ~400k movies out; a seeded sample of this many scores as well."""


def unused_sample(ctx, max_movies: int = MAX_UNUSED) -> np.ndarray:
    """Sorted ids of the (sampled) movies of the multi-label evaluation set that are in no split."""
    test = ctx.multilabel.test
    ids = test.loc[test["source"] == UNUSED, "movie_id"].to_numpy(dtype=np.int64)
    if len(ids) > max_movies:
        ids = np.random.default_rng(ctx.config.seed).choice(ids, size=max_movies, replace=False)
    return np.sort(ids)


def split_object(split: str, movie_ids: np.ndarray) -> str:
    """The cache object of one split is named by the exact movies it embeds, so a changed split never reuses it."""
    digest = hashlib.sha256(np.sort(movie_ids).astype("<i8").tobytes()).hexdigest()[:16]
    return f"{split}-{digest}"


def embed_step(run_id: str, settings: Settings | None = None) -> dict:
    """Computed once per (snapshot, backbone, weights, image size, split membership) and shared by every
    trial, the multi-class head and all OvA heads."""
    from postergenre.feature_cache import has_features, save_features
    from postergenre.features import embed_with

    ctx = load_run(run_id, settings)
    cfg, key, labels = ctx.config, ctx.feature_key, ctx.labels
    counts, objects, backbone, started = {}, {}, None, time.perf_counter()
    wanted = {split: labels.loc[labels["split"] == split, "movie_id"].to_numpy(dtype=np.int64) for split in SPLITS}
    wanted[UNUSED] = unused_sample(ctx)
    for split, ids in wanted.items():
        objects[split] = split_object(split, ids)
        if has_features(ctx.store, key, objects[split]):
            counts[split] = {"cached": True, "total": len(ids)}
            continue
        paths = ctx.poster_paths(ids)
        if backbone is None:
            backbone = ctx.build_backbone()
            ctx.keep_backbone_weights(backbone)  # before embedding: every split comes from these weights
        features, kept, stats = embed_with(
            backbone, [paths[int(i)] for i in ids], image_size=cfg.image_size, batch_size=cfg.batch_size
        )
        save_features(ctx.store, key, objects[split], ids[kept], features)
        counts[split] = {"cached": False, **stats.to_dict()}
        log.info("embedded split", run_id=ctx.run_id, split=split, **stats.to_dict())
    if not ctx.store.exists(ctx.backbone_weights_key):  # computed here, or cached before weights were kept
        ctx.keep_backbone_weights(backbone or ctx.build_backbone())
    ctx.store.put_json(ctx.layout.features, {"feature_key": key, "splits": objects})
    staged = stage_check_posters(ctx, ctx.features["test"][0])  # decoded here, where TensorFlow already runs
    return {
        "run_id": ctx.run_id,
        "feature_key": key,
        "splits": counts,
        "check_posters": staged,
        "seconds": round(time.perf_counter() - started, 2),
    }

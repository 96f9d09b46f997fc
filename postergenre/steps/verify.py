"""Before a champion moves: the registered artefact itself (downloaded, digest-checked, loaded) runs on a sample
of test posters, and its outputs must match the scores the decision was made on.

The decision scored the head on cached features (or, fine-tuned, the model on posters through tf.data); here
the full backbone+head model runs on posters decoded as serving decodes them (``images.load_image``: the same
decode and letterbox as the training pipeline). The two differ only by the cached features' float16 rounding,
hence the tolerance; a wrong backbone, wrong weights or a wrong head are off by far more. (PIL's JPEG decoder
upsamples chroma differently from TensorFlow's: up to 0.034 on real posters, too coarse for this check.)

The embed step, which runs TensorFlow anyway, decodes the sample once per run (``stage_check_posters``), so the
check itself needs no TensorFlow: a promote task on the JAX backend would otherwise import it (3-5 s and
~300 MB per promotion, benchmarks/bench_orchestration.py) to decode 8 posters. A run embedded before the sample
existed decodes it at check time, as before.
"""

from __future__ import annotations

import numpy as np

from postergenre.model_cache import load_version_model
from postergenre.steps.context import RunContext, load_npz, store_npz
from postergenre.storage import NotFound

ARTIFACT_ATOL = 0.01
"""Largest absolute difference allowed between the artefact's probabilities and the evaluated ones."""
ARTIFACT_SAMPLE = 8


def sample_rows(n: int, k: int = ARTIFACT_SAMPLE) -> np.ndarray:
    """``k`` evenly spread row indices of ``n`` (all when fewer): deterministic, covers the whole split."""
    return np.unique(np.linspace(0, n - 1, num=min(n, k)).round().astype(int)) if n else np.zeros(0, int)


def decode_posters(ctx: RunContext, movie_ids: np.ndarray, size: int) -> np.ndarray:
    """``float32[n, size, size, 3]``: the posters as serving feeds them to a model (TensorFlow's decoder)."""
    from postergenre.images import load_image

    paths, cap = ctx.poster_paths(movie_ids), ctx.settings.max_image_pixels
    images = [load_image(paths[int(i)], size, max_pixels=cap) for i in movie_ids]
    return np.stack(images).astype(np.float32) if images else np.zeros((0, size, size, 3), np.float32)


def stage_check_posters(ctx: RunContext, test_ids: np.ndarray) -> int:
    """Decode the check's sample of the run's embedded test posters (in the embed step); returns how many it
    decoded (0 on a re-run of embed: the same test split is staged already)."""
    if ctx.store.exists(ctx.layout.check_posters):
        return 0
    ids = np.asarray(test_ids, dtype=np.int64)[sample_rows(len(test_ids))]
    store_npz(ctx.store, ctx.layout.check_posters, movie_ids=ids, images=decode_posters(ctx, ids, ctx.config.image_size))
    return len(ids)


def _check_posters(ctx: RunContext, test_ids: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    try:
        staged = load_npz(ctx.store, ctx.layout.check_posters)
    except NotFound:
        staged = None
    if staged is not None and staged["images"].shape[1:3] == (size, size):
        return staged["movie_ids"], staged["images"]
    ids = np.asarray(test_ids)[sample_rows(len(test_ids))]  # a run embedded before the sample was staged
    return ids, decode_posters(ctx, ids, size)


def check_artifact(ctx: RunContext, name: str, version: str, predictions: dict[str, np.ndarray]) -> dict:
    """``{"ok", "posters", "max_abs_diff", "tolerance"}`` for the registered ``version`` of ``name``."""
    model = load_version_model(ctx.registry_store, name, version, ctx.settings)
    ids, images = _check_posters(ctx, predictions["test_ids"], int(model.input_shape[1]))
    rows = {int(movie_id): row for row, movie_id in enumerate(predictions["test_ids"])}
    missing = [int(i) for i in ids if int(i) not in rows]
    if missing:
        return {"ok": False, "posters": len(ids), "max_abs_diff": None, "tolerance": ARTIFACT_ATOL,
                "problem": f"test posters {missing[:5]} have no evaluated score"}
    expected = predictions["test"][[rows[int(i)] for i in ids]]
    got = np.asarray(model.predict(images, verbose=0), dtype=np.float32) if len(ids) else expected[:0]
    if got.shape != expected.shape:
        return {"ok": False, "posters": len(ids), "max_abs_diff": None, "tolerance": ARTIFACT_ATOL,
                "problem": f"outputs of shape {got.shape[1:]}, evaluated {expected.shape[1:]}"}
    diff = float(np.max(np.abs(got - expected))) if len(ids) else 0.0
    return {"ok": diff <= ARTIFACT_ATOL, "posters": len(ids), "max_abs_diff": round(diff, 6),
            "tolerance": ARTIFACT_ATOL}

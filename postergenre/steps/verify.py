"""Before a champion moves: the registered artefact itself (downloaded, digest-checked, loaded) runs on a sample
of test posters, and its outputs must match the scores the decision was made on.

The decision scored the head on cached features (or, fine-tuned, the model on posters through tf.data); here
the full backbone+head model runs on posters loaded as serving loads them (``images.load_image``: the same
decode and letterbox as the training pipeline). The two differ only by the cached features' float16 rounding,
hence the tolerance; a wrong backbone, wrong weights or a wrong head are off by far more. (PIL's JPEG decoder
upsamples chroma differently from TensorFlow's: up to 0.034 on real posters, too coarse for this check.)
"""

from __future__ import annotations

import numpy as np

from postergenre.model_cache import load_version_model
from postergenre.steps.context import RunContext

ARTIFACT_ATOL = 0.01
"""Largest absolute difference allowed between the artefact's probabilities and the evaluated ones."""
ARTIFACT_SAMPLE = 8


def sample_rows(n: int, k: int = ARTIFACT_SAMPLE) -> np.ndarray:
    """``k`` evenly spread row indices of ``n`` (all when fewer): deterministic, covers the whole split."""
    return np.unique(np.linspace(0, n - 1, num=min(n, k)).round().astype(int)) if n else np.zeros(0, int)


def check_artifact(ctx: RunContext, name: str, version: str, predictions: dict[str, np.ndarray]) -> dict:
    """``{"ok", "posters", "max_abs_diff", "tolerance"}`` for the registered ``version`` of ``name``."""
    rows = sample_rows(len(predictions["test_ids"]))
    ids = predictions["test_ids"][rows]
    expected = predictions["test"][rows]
    model = load_version_model(ctx.registry_store, name, version, ctx.settings)
    from postergenre.images import load_image  # TensorFlow, only when a champion is about to move

    paths = ctx.poster_paths(ids)
    size, cap = int(model.input_shape[1]), ctx.settings.max_image_pixels
    images = np.stack([load_image(paths[int(i)], size, max_pixels=cap) for i in ids])
    got = np.asarray(model.predict(images, verbose=0), dtype=np.float32)
    if got.shape != expected.shape:
        return {"ok": False, "posters": len(ids), "max_abs_diff": None, "tolerance": ARTIFACT_ATOL,
                "problem": f"outputs of shape {got.shape[1:]}, evaluated {expected.shape[1:]}"}
    diff = float(np.max(np.abs(got - expected))) if len(ids) else 0.0
    return {"ok": diff <= ARTIFACT_ATOL, "posters": len(ids), "max_abs_diff": round(diff, 6),
            "tolerance": ARTIFACT_ATOL}

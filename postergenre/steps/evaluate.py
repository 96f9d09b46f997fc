"""Stage ``evaluate``: challenger vs the current champion on the challenger's test split; the decision is always
written, also "keep"."""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import pandas as pd

from postergenre import registry
from postergenre.config import Settings
from postergenre.evaluation import DecisionPolicy, decide
from postergenre.genres import CNN_MODEL, model_name, normalise_genre
from postergenre.model_cache import load_version_model
from postergenre.steps.context import RunContext, load_npz, load_run


def test_truth(ctx: RunContext, target: str, predictions: dict) -> tuple[np.ndarray, list[str], np.ndarray]:
    """(movie ids, class names, true class index) of the challenger's test rows for ``target``."""
    if model_name(target) == CNN_MODEL:
        ids = predictions["test_ids"]
        genre_of = ctx.labels.set_index("movie_id")["genre"].astype(str)
        return ids, ctx.classes, np.array([ctx.classes.index(genre_of[i]) for i in ids])
    genre = normalise_genre(target)
    ova = ctx.ova(genre).set_index("movie_id")["label"]
    ids = predictions["own_test_ids"]
    return ids, ["other", genre], ova.loc[ids].to_numpy(int)


def _predict_head_on_features(model, ctx: RunContext, ids: np.ndarray) -> np.ndarray:
    test_ids, test_features = ctx.features["test"]
    index = pd.Index(test_ids).get_indexer(ids)
    if (index < 0).any():
        raise RuntimeError("test rows without cached features; cannot score the champion on the same data")
    return model.get_layer("head").predict(test_features[index].astype(np.float32), verbose=0)


def predict_posters_of(model, ctx: RunContext, ids: np.ndarray) -> np.ndarray:
    """A full (backbone+head) model's probabilities on the posters of ``ids``, in that order."""
    from postergenre.images import make_dataset

    paths = ctx.poster_paths(ids)
    dataset, stats = make_dataset(
        [paths[int(i)] for i in ids],
        None,
        image_size=int(model.input_shape[1]),
        batch_size=ctx.config.batch_size,
    )
    if stats.skipped:
        raise RuntimeError(f"{stats.skipped} test posters no longer decode; cannot score the champion fairly")
    return model.predict(dataset, verbose=0)


def _champion_scores(ctx: RunContext, name: str, champion: dict, info: dict, ids: np.ndarray) -> np.ndarray:
    """The champion's probabilities on the challenger's test rows: the same data for both sides.

    When the champion was trained on the same cached features (same snapshot, backbone, weights, image size) its
    head runs on them directly; otherwise the full champion model runs on the test posters.
    """
    model = load_version_model(ctx.registry_store, name, champion["version"], ctx.settings)
    lineage = info["lineage"]
    lineage = lineage.get("lineage", lineage)
    # A fine-tuned champion's backbone is its own: the cached features are not its features.
    if lineage.get("feature_key") == ctx.feature_key and not lineage.get("fine_tuned"):
        return _predict_head_on_features(model, ctx, ids)
    return predict_posters_of(model, ctx, ids)


def _as_pred(proba: np.ndarray, binary: bool, threshold: float = 0.5) -> np.ndarray:
    return (proba[:, 0] > threshold).astype(int) if binary else np.argmax(proba, axis=1)


def _probe_predictions(predictions: dict, metrics: dict, binary: bool) -> np.ndarray | None:
    """The candidate's linear probe on the same test rows, read like the head (its own val threshold); None
    for a candidate trained before probes were fitted."""
    key = "probe_own_test" if binary else "probe_test"
    if key not in predictions:
        return None
    return _as_pred(predictions[key], binary, metrics.get("probe", {}).get("threshold", 0.5))


def evaluate_step(
    run_id: str, target: str, settings: Settings | None = None, policy: DecisionPolicy | None = None
) -> dict:
    """Challenger vs the current champion on the challenger's test split; the decision is always written."""
    ctx = load_run(run_id, settings)
    layout, name = ctx.layout, model_name(target)
    binary = name != CNN_MODEL
    policy = policy or DecisionPolicy(
        min_macro_f1_over_chance=1.1 if binary else 1.5,
        seed=ctx.config.seed,
        require_probe_parity=ctx.config.probe_gate,
    )
    predictions = load_npz(ctx.store, layout.candidate(name, "predictions.npz"))
    ids, classes, y_true = test_truth(ctx, target, predictions)
    candidate = ctx.store.get_json(layout.candidate(name))
    threshold = candidate["metrics"].get("threshold", 0.5)
    scores = predictions["own_test"] if binary else predictions["test"]
    challenger = _as_pred(scores, binary, threshold)
    probe_pred = _probe_predictions(predictions, candidate["metrics"], binary)
    champion = registry.get_champion(ctx.registry_store, name)
    champion_pred = None
    if champion is not None:
        info = registry.show_version(ctx.registry_store, name, champion["version"])
        champion_threshold = info["metrics"].get("threshold", 0.5) if binary else 0.5
        champion_pred = _as_pred(_champion_scores(ctx, name, champion, info, ids), binary, champion_threshold)
    decision = decide(y_true, challenger, champion_pred, classes, policy, pred_probe=probe_pred)
    decision.update(
        {
            "model": name,
            "run_id": ctx.run_id,
            "champion_version": champion["version"] if champion else None,
            "test_rows": len(ids),
            "policy": asdict(policy),
        }
    )
    ctx.store.put_json(layout.decision(name), decision)
    return {
        "model": name,
        "promote": decision["promote"],
        "reason": decision["reason"],
        "champion_version": decision["champion_version"],
        "challenger_macro_f1": decision["challenger"]["macro_f1"],
    }

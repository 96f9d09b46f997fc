"""Stage ``train``: genre-cnn or one OvA member with the selected hyperparameters, stored as a candidate."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from postergenre.config import Settings
from postergenre.evaluation import binary_metrics, choose_thresholds, multiclass_metrics
from postergenre.genres import CNN_MODEL, model_name, normalise_genre
from postergenre.log import get_logger
from postergenre.steps.context import load_run, save_keras, store_npz

log = get_logger(__name__)

FINE_TUNE = "fine_tune.json"


def splits_of(data) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {
        "train": (data.x_train, data.y_train),
        "val": (data.x_val, data.y_val),
        "test": (data.x_test, data.y_test),
    }


def fit_linear_probe(data, kind: str, classes: list[str]):
    """The head's baseline on the same cached features and split: (metrics per split + C, probabilities on
    each split, the fitted probe)."""
    from postergenre.probe import fit_probe

    fitted = fit_probe(
        data.x_train,
        data.y_train,
        data.x_val,
        data.y_val,
        predict={"train": data.x_train, "val": data.x_val, "test": data.x_test},
        sample_weight=data.w_train,
    )
    extra = {"C": fitted.C, "val_score": fitted.val_score, "criterion": fitted.criterion}
    if kind == "multiclass":
        return {**split_metrics(fitted.proba, data, kind, classes), **extra}, fitted.proba, fitted.probe
    threshold = val_threshold(fitted.proba["val"][:, 0], data, classes)  # read at its own threshold, as the head
    metrics = split_metrics(fitted.proba, data, kind, classes, threshold)
    return {**metrics, **extra, "threshold": threshold}, fitted.proba, fitted.probe


def val_threshold(p_val: np.ndarray, data, classes: list[str]) -> float:
    """Column 1 of [1-p, p] is the genre: the threshold that maximises its F1 on validation."""
    return choose_thresholds(data.y_val[:, 0].astype(int), np.stack([1 - p_val, p_val], 1), classes)[classes[1]]


def split_metrics(proba: dict, data, kind: str, classes: list[str], threshold: float = 0.5) -> dict:
    if kind == "multiclass":
        return {s: multiclass_metrics(np.argmax(y, 1), proba[s], classes) for s, (_, y) in splits_of(data).items()}
    return {s: binary_metrics(y[:, 0].astype(int), proba[s][:, 0], threshold) for s, (_, y) in splits_of(data).items()}


def _val_macro_f1(proba_val: np.ndarray, data, kind: str, threshold: float) -> float:
    """Macro-F1 on val over the classes (a member: over its two labels), the decision's own measure."""
    from sklearn.metrics import f1_score

    if kind == "multiclass":
        y, pred = np.argmax(data.y_val, 1), np.argmax(proba_val, 1)
    else:
        y, pred = data.y_val[:, 0].astype(int), (proba_val[:, 0] > threshold).astype(int)
    return float(f1_score(y, pred, average="macro", zero_division=0))


def choose_head(head, probe, proba_head: dict, proba_probe: dict, data, kind: str, classes: list[str]):
    """The tuned head, or the linear probe turned into a Keras head when the probe does better on val (never
    on test): a run never registers a head that loses to logistic regression on its own features. Returns
    (head, kind name, val macro-F1 of both)."""
    from postergenre.linear_head import linear_head

    t_head = val_threshold(proba_head["val"][:, 0], data, classes) if kind == "binary" else 0.5
    t_probe = val_threshold(proba_probe["val"][:, 0], data, classes) if kind == "binary" else 0.5
    scores = {
        "mlp": _val_macro_f1(proba_head["val"], data, kind, t_head),
        "linear-probe": _val_macro_f1(proba_probe["val"], data, kind, t_probe),
    }
    if scores["linear-probe"] > scores["mlp"]:  # ties keep the report's architecture
        return linear_head(probe, data.input_dim), "linear-probe", scores
    return head, "mlp", scores


def val_is_genre(ctx, genre: str, val_ids: np.ndarray) -> np.ndarray:
    """0/1 per multi-class val movie: is its collapsed genre ``genre`` (what the argmax calibrations fit)."""
    genre_of = ctx.labels.set_index("movie_id")["genre"].astype(str)
    return (genre_of.loc[val_ids].to_numpy() == genre).astype(np.int8)


def member_scoring(ctx, genre: str, val_ids: np.ndarray, val_scores: np.ndarray) -> dict:
    """How an OvA member's scores are read at ensemble level, both fitted on the val split: a Platt
    calibration against the collapsed label (so an argmax across members compares like with like; the joint
    vector scaling of all members, ``calibration.fit_joint_members``, is fitted where they meet: the report and
    serving) and the threshold on its true genre lists (multi-label output)."""
    from postergenre import multilabel
    from postergenre.calibration import fit_platt

    is_genre = val_is_genre(ctx, genre, val_ids)
    truth = ctx.multilabel
    column = truth.classes.index(genre)
    rows = pd.Index(truth.val["movie_id"].to_numpy()).get_indexer(val_ids)
    if (rows < 0).any():
        raise ValueError(f"{genre}: val movies without a true genre list; prepare the dataset again")
    has_genre = truth.y_val[rows, column][:, None]
    threshold = multilabel.choose_thresholds(has_genre, val_scores[:, None], [genre])[genre]
    return {"calibration": fit_platt(val_scores, is_genre).to_dict(), "multilabel_threshold": threshold}


def train_step(run_id: str, target: str, settings: Settings | None = None) -> dict:
    """Train ``genre-cnn`` or one genre's OvA member with the selected hyperparameters, as a candidate.

    The candidate is the full backbone+head Keras model (so prediction takes a raw poster), with its metrics on
    every split and its predicted probabilities stored next to it for evaluation and the run report.
    """
    from postergenre.members import bag_data, bag_sets, member_hp, train_bagged_member
    from postergenre.models import build_classifier
    from postergenre.training import Checkpointer, train_multiclass
    from postergenre.tuning import fit_kwargs

    ctx = load_run(run_id, settings)
    cfg, layout, name = ctx.config, ctx.layout, model_name(target)
    hp = ctx.store.get_json(layout.best)["hp"]
    multiclass = ctx.multiclass_data()
    train_kwargs = dict(
        max_epochs=cfg.max_epochs,
        seed=cfg.seed,
        checkpoint=Checkpointer(ctx.store, layout.checkpoints(name)),
        on_epoch=lambda epoch, logs: log.info("epoch", run_id=ctx.run_id, model=name, epoch=epoch, **logs),
    )
    started = time.perf_counter()
    hp_kwargs = {**fit_kwargs(hp, cfg.batch_size), **train_kwargs}
    if name == CNN_MODEL:
        kind, classes, data = "multiclass", ctx.classes, multiclass
        head, summary = train_multiclass(data, **hp_kwargs)
    else:  # a bag of heads on draws of the report's 70/30 set (``members``), without label smoothing
        genre = normalise_genre(target)
        hp = member_hp(hp)
        bags = bag_data(ctx.features, bag_sets(ctx.labels, ctx.ova(genre), genre, cfg.seed, cfg.balance, cfg.ova_bags))
        kind, classes, data = "binary", ["other", genre], bags[0]  # bag 0: the dataset's own OvA set
        folder = layout.checkpoints(name)
        hp_kwargs.update(
            fit_kwargs(hp, cfg.batch_size),
            checkpoint=lambda k: Checkpointer(ctx.store, folder if k == 0 else f"{folder}/bag-{k}"),
        )
        head, summary = train_bagged_member(genre, bags, **hp_kwargs)
    probe_metrics, probe_proba, probe = fit_linear_probe(data, kind, classes)
    proba = {split: head.predict(x, verbose=0) for split, (x, _) in splits_of(data).items()}
    head, head_kind, val_f1 = choose_head(head, probe, proba, probe_proba, data, kind, classes)
    if head_kind != "mlp":
        proba = {split: head.predict(x, verbose=0) for split, (x, _) in splits_of(data).items()}
    metrics = split_metrics(proba, data, kind, classes)
    if kind == "binary":
        threshold = val_threshold(proba["val"][:, 0], data, classes)
        metrics["threshold"] = threshold
        metrics["test_at_threshold"] = binary_metrics(data.y_test[:, 0].astype(int), proba["test"][:, 0], threshold)
    metrics["probe"] = probe_metrics
    metrics["head"] = {"kind": head_kind, "val_macro_f1": val_f1}
    log.info("head chosen on val", run_id=ctx.run_id, model=name, head=head_kind, **val_f1)
    seconds = round(time.perf_counter() - started, 2)
    # Probabilities on the multi-class val/test rows: the OvA ensemble's inputs, and the evaluation's.
    arrays = dict(
        val_ids=multiclass.movie_ids["val"],
        val=head.predict(multiclass.x_val, verbose=0),
        test_ids=multiclass.movie_ids["test"],
        test=head.predict(multiclass.x_test, verbose=0),
    )
    if name == CNN_MODEL:
        arrays.update(probe_test=probe_proba["test"])
    else:  # and on the member's own binary test set, for its champion/challenger decision
        arrays.update(own_test_ids=data.movie_ids["test"], own_test=proba["test"], probe_own_test=probe_proba["test"])
        if "unused" in ctx.features:  # the rest of the multi-label evaluation set (movies in no split)
            unused_ids, unused_x = ctx.features["unused"]
            arrays.update(unused_ids=unused_ids, unused=head.predict(unused_x.astype(np.float32), verbose=0))
        metrics.update(member_scoring(ctx, genre, arrays["val_ids"], arrays["val"][:, 0]))
        arrays["val_is_genre"] = val_is_genre(ctx, genre, arrays["val_ids"])  # registered for the joint fit
    store_npz(ctx.store, layout.candidate(name, "predictions.npz"), **arrays)
    with tempfile.TemporaryDirectory() as tmp:
        model_path, head_path = Path(tmp) / "model.keras", Path(tmp) / "head.keras"
        save_keras(build_classifier(ctx.build_backbone(), head), model_path)
        save_keras(head, head_path)  # the fine-tune stage always starts from this trained head
        ctx.store.upload_files(
            [
                (model_path, layout.candidate(name, "model.keras")),
                (head_path, layout.candidate(name, "head.keras")),
            ]
        )
    if name == CNN_MODEL:  # a fine-tune (finished or checkpointed) of the previous candidate is stale
        ctx.store.delete(layout.candidate(name, FINE_TUNE))
        for info in list(ctx.store.list(layout.fine_tune_checkpoints(name) + "/")):
            ctx.store.delete(info.key)
    candidate = {
        "target": target,
        "hp": hp,
        "head": head_kind,
        "training": {k: v for k, v in summary.items() if k != "history"},
        "history": summary.get("history", {}),
        "metrics": metrics,
        "seconds": seconds,
        "dropped": multiclass.dropped,
    }
    ctx.store.put_json(layout.candidate(name), candidate)
    test = metrics["test"]
    return {
        "run_id": ctx.run_id,
        "target": target,
        "val_loss": summary["val_loss"],
        "test_accuracy": test["accuracy"],
        "test_f1": test.get("macro_f1", test.get("f1")),
        "seconds": seconds,
        "uri": ctx.url(layout.candidate_prefix(name)),
    }

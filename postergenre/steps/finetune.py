"""Stage ``fine_tune`` (optional): genre-cnn from pixels with its top backbone blocks unfrozen."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from postergenre.config import Settings
from postergenre.evaluation import multiclass_metrics
from postergenre.genres import CNN_MODEL
from postergenre.log import get_logger
from postergenre.steps.context import RunContext, load_run, save_keras, store_npz
from postergenre.steps.train import FINE_TUNE
from postergenre.storage import NotFound

log = get_logger(__name__)


def _poster_split(
    ctx: RunContext,
    targets: np.ndarray,
    paths: dict[int, Path],
    split: str,
    shuffle_seed: int | None = None,
) -> tuple[object, np.ndarray, np.ndarray]:
    """A tf.data of (poster, one-hot genre) over ``split``, in label order unless ``shuffle_seed`` is given,
    with the movie ids of the rows it keeps (undecodable posters left out) and their class indices."""
    from postergenre.images import make_dataset

    labels: pd.DataFrame = ctx.labels
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


def fine_tune_step(run_id: str, settings: Settings | None = None) -> dict:
    """The optional fine-tune stage of ``genre-cnn`` (``config.fine_tune``), on pixels, from its trained head.

    The top ``fine_tune_blocks`` backbone blocks (BatchNorm frozen) and the head train at a low learning rate;
    the candidate (model, metrics, predictions) is replaced only when that lowers the validation loss, and the
    outcome is stored either way. A re-run returns the stored outcome; a killed one resumes from its per-epoch
    checkpoint in the store; re-training the candidate clears both.
    """
    ctx = load_run(run_id, settings)
    cfg, layout = ctx.config, ctx.layout
    if not cfg.fine_tune:
        return {"run_id": ctx.run_id, "fine_tuned": False, "reason": "fine_tune is off for this run"}
    result_key = layout.candidate(CNN_MODEL, FINE_TUNE)
    try:
        return ctx.store.get_json(result_key)
    except NotFound:
        pass
    import keras

    from postergenre.finetune import fine_tune
    from postergenre.labels import one_hot
    from postergenre.models import build_classifier
    from postergenre.training import Checkpointer

    classes, labels = ctx.classes, ctx.labels
    targets = one_hot(labels["genre"].astype(str), classes).astype(np.float32)
    paths = ctx.poster_paths(labels["movie_id"].to_numpy(np.int64))  # fetched once per worker
    fit_set, train_ids, _ = _poster_split(ctx, targets, paths, "train", shuffle_seed=cfg.seed)
    val_set, val_ids, val_truth = _poster_split(ctx, targets, paths, "val")
    with tempfile.TemporaryDirectory() as tmp:
        head_path = Path(tmp) / "head.keras"
        ctx.store.download_file(layout.candidate(CNN_MODEL, "head.keras"), head_path)
        head = keras.models.load_model(head_path, compile=False)
        model, summary = fine_tune(
            build_classifier(ctx.build_backbone(), head),
            fit_set,
            val_set,
            kind="multiclass",
            top_blocks=cfg.fine_tune_blocks,
            learning_rate=cfg.fine_tune_learning_rate,
            max_epochs=cfg.max_epochs,
            seed=cfg.seed,
            checkpoint=Checkpointer(ctx.store, layout.fine_tune_checkpoints(CNN_MODEL)),
            on_epoch=lambda epoch, logs: log.info("fine-tune epoch", run_id=ctx.run_id, epoch=epoch, **logs),
        )
        epochs_here = summary["epochs_run"] - (summary["resumed_from_epoch"] or 0)
        summary["train_posters_per_second"] = (
            round(len(train_ids) * epochs_here / summary["seconds"], 1) if epochs_here else None
        )
        if summary["pays"]:  # the candidate's metrics and predictions, from the fine-tuned model on posters
            in_order = {
                "train": _poster_split(ctx, targets, paths, "train"),
                "val": (val_set, val_ids, val_truth),
                "test": _poster_split(ctx, targets, paths, "test"),
            }
            probabilities = {split: model.predict(ds, verbose=0) for split, (ds, _, _) in in_order.items()}
            candidate = ctx.store.get_json(layout.candidate(CNN_MODEL))
            candidate["metrics"] = {
                split: multiclass_metrics(truth, probabilities[split], classes)
                for split, (_, _, truth) in in_order.items()
            }
            model_path = Path(tmp) / "model.keras"
            save_keras(model, model_path)
            ctx.store.upload_files([(model_path, layout.candidate(CNN_MODEL, "model.keras"))])
            store_npz(
                ctx.store,
                layout.candidate(CNN_MODEL, "predictions.npz"),
                val_ids=val_ids,
                val=probabilities["val"],
                test_ids=in_order["test"][1],
                test=probabilities["test"],
            )
            candidate["fine_tune"] = {k: v for k, v in summary.items() if k != "history"}
            ctx.store.put_json(layout.candidate(CNN_MODEL), candidate)
    result = {"run_id": ctx.run_id, "fine_tuned": summary["pays"], **summary}
    ctx.store.put_json(result_key, result)  # last: a crash before it re-runs the stage from the same head
    log.info(
        "fine-tune finished",
        run_id=ctx.run_id,
        pays=summary["pays"],
        val_cross_entropy=summary["val_cross_entropy"],
        val_cross_entropy_before=summary["val_cross_entropy_before"],
    )
    return result

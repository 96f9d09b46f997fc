"""Train the report's heads on cached backbone features: deterministic, early-stopped and resumable.

Embed once, train many: every head (tuning trials, the multi-class CNN, the 19 one-vs-all members) trains on the
feature vectors cached by ``features.py``, never on pixels. Training follows the report (sections 2.1 and 3.1):
Adam, categorical or binary cross-entropy, ``EarlyStopping`` on the validation loss with a patience of three
epochs, and the best epoch's weights kept. The loss watched is the plain validation cross-entropy, which stays
the report's number when label smoothing or L2 penalties (``tuning``'s regularised space) are on.

Determinism: the head is built from seeded initialisers, Dropout has its own seeded generator, and the training
rows are put in a fresh order every epoch drawn from ``default_rng([seed, epoch])`` rather than from a global
random state. The order of epoch ``e`` therefore does not depend on how many epochs this process has run, which
is what lets a killed run resume (``Checkpointer``) and end with exactly the weights of an uninterrupted one.
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd

from postergenre.labels import SPLITS, one_hot
from postergenre.models import (
    CROSS_ENTROPY,
    DROPOUT_RATE,
    FIRST_UNITS,
    HeadKind,
    build_head,
    compile_head,
)
from postergenre.storage import NotFound, ObjectStore

EpochHook = Callable[[int, dict[str, float]], None]


@dataclass
class HeadData:
    """Aligned float32 features and targets per split; ``y`` is one-hot (multi-class) or a 0/1 column.

    ``movie_ids[split]`` gives each row's movie; ``dropped[split]`` counts labelled movies that had no cached
    features (undecodable posters) and were left out. ``w_<split>``: per-row sample weights (the ``weight``
    column of a ``weighted`` dataset), or None for equal weights; training and validation losses use them.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    movie_ids: dict[str, np.ndarray] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    w_train: np.ndarray | None = None
    w_val: np.ndarray | None = None
    w_test: np.ndarray | None = None

    @property
    def input_dim(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def n_outputs(self) -> int:
        return int(self.y_train.shape[1])


FeaturesBySplit = Mapping[str, tuple[np.ndarray, np.ndarray]]


def _assemble(features_by_split: FeaturesBySplit, frame: pd.DataFrame, targets: np.ndarray) -> HeadData:
    """Join ``frame`` (movie_id, split; row i has ``targets[i]``) to each split's cached features by movie_id.

    A movie is looked up only in its own split's features; labelled movies without features are dropped and
    counted. Rows keep ``frame``'s order. A ``weight`` column in ``frame`` becomes the splits' sample weights
    (None for a split where every weight is 1).
    """
    for split in ("train", "val"):
        if split not in features_by_split:
            raise ValueError(f"features for the {split!r} split are required")
    split_of = frame["split"].astype(str).to_numpy()
    wanted_ids = frame["movie_id"].to_numpy(dtype=np.int64)
    weights = frame["weight"].to_numpy(dtype=np.float32) if "weight" in frame.columns else None
    arrays: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    split_weights: dict[str, np.ndarray | None] = {}
    movie_ids, dropped = {}, {}
    for split in SPLITS:
        if split not in features_by_split:
            continue
        ids, feats = features_by_split[split]
        index = pd.Index(np.asarray(ids, dtype=np.int64))
        if not index.is_unique:
            raise ValueError(f"duplicate movie_id in the {split!r} features")
        rows = np.flatnonzero(split_of == split)
        at = index.get_indexer(wanted_ids[rows])
        found = at >= 0
        movie_ids[split] = wanted_ids[rows[found]]
        dropped[split] = int((~found).sum())
        arrays[split] = (
            np.asarray(feats)[at[found]].astype(np.float32),
            targets[rows[found]].astype(np.float32),
        )
        w = None if weights is None else weights[rows[found]]
        # All 1 (every split of an undersampled dataset, val and test of a weighted one): no weights, so the
        # head trains and validates exactly as it did before datasets had a weight column.
        split_weights[split] = None if w is None or bool(np.all(w == 1.0)) else w
    test = arrays.get("test", (None, None))
    return HeadData(
        *arrays["train"],
        *arrays["val"],
        x_test=test[0],
        y_test=test[1],
        movie_ids=movie_ids,
        dropped=dropped,
        w_train=split_weights["train"],
        w_val=split_weights["val"],
        w_test=split_weights.get("test"),
    )


def multiclass_data(
    features_by_split: FeaturesBySplit, labels_df: pd.DataFrame, classes: list[str] | tuple[str, ...]
) -> HeadData:
    """Features + one-hot genres (columns in ``classes`` order) from ``load_labels``' movie_id, genre, split."""
    return _assemble(features_by_split, labels_df, one_hot(labels_df["genre"], classes))


def binary_data(features_by_split: FeaturesBySplit, ova_df: pd.DataFrame) -> HeadData:
    """Features + a 0/1 target column from one genre's ``load_ova`` set (movie_id, label, split)."""
    return _assemble(features_by_split, ova_df, ova_df["label"].to_numpy().reshape(-1, 1))


class _EpochShuffled(keras.utils.PyDataset):
    """Training batches in the order ``default_rng([seed, epoch]).permutation``; ``epoch`` is set per epoch.

    With ``w`` each batch is ``(x, y, sample_weight)``.
    """

    def __init__(
        self, x: np.ndarray, y: np.ndarray, batch_size: int, seed: int, w: np.ndarray | None = None
    ) -> None:
        super().__init__()
        self.x, self.y, self.w, self.batch_size, self.seed = x, y, w, batch_size, seed
        self.epoch = 0
        self._order = self._permutation()

    def _permutation(self) -> np.ndarray:
        return np.random.default_rng([self.seed, self.epoch]).permutation(len(self.x))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self._order = self._permutation()

    def __len__(self) -> int:
        return -(-len(self.x) // self.batch_size)

    def __getitem__(self, i: int) -> tuple[np.ndarray, ...]:
        rows = self._order[i * self.batch_size : (i + 1) * self.batch_size]
        if self.w is None:
            return self.x[rows], self.y[rows]
        return self.x[rows], self.y[rows], self.w[rows]


class _Hooks(keras.callbacks.Callback):
    """Sets the epoch's row order before it starts; records each epoch's logs (runs first)."""

    def __init__(self, data: _EpochShuffled, history: list[dict[str, float]]) -> None:
        super().__init__()
        self.data, self.history = data, history

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.data.set_epoch(epoch)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.history.append({"epoch": epoch, **{k: float(v) for k, v in (logs or {}).items()}})


class EpochProgress(keras.callbacks.Callback):
    """Calls ``on_epoch(epoch, logs)``; runs last, after the epoch's checkpoint is written."""

    def __init__(self, on_epoch: EpochHook) -> None:
        super().__init__()
        self.on_epoch = on_epoch

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.on_epoch(epoch, {k: float(v) for k, v in (logs or {}).items()})


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """The report's stopping rule; can start from a checkpointed state (Keras resets it in on_train_begin).

    It watches the validation cross-entropy itself (``val_cross_entropy``): the same number as ``val_loss`` for
    the report's head, but without label smoothing and L2 penalties, which make ``val_loss`` partly a measure of
    the weights rather than of the predictions.
    """

    def __init__(self, patience: int, resume: dict | None = None, best_weights: list | None = None) -> None:
        super().__init__(monitor=f"val_{CROSS_ENTROPY}", patience=patience, restore_best_weights=True)
        self._resume, self._resume_weights = resume, best_weights

    def on_train_begin(self, logs: dict | None = None) -> None:
        super().on_train_begin(logs)
        if self._resume is not None:
            self.best = self._resume["best"]
            self.wait = self._resume["wait"]
            self.best_epoch = self._resume["best_epoch"]
            self.best_weights = self._resume_weights

    def state(self) -> dict:
        return {
            "best": None if self.best is None else float(self.best),
            "wait": self.wait,
            "best_epoch": self.best_epoch,
        }


def _state_variables(model: keras.Model) -> list:
    """Variables that ``.weights.h5`` leaves out but training changes: the seed generators' states (Dropout)."""
    saved = {id(w) for w in model.weights}
    return [v for v in model.variables if id(v) not in saved]


@dataclass
class Resume:
    epoch: int
    history: list[dict[str, float]]
    early_stopping: dict
    best_weights: list[np.ndarray]
    finished: bool


class Checkpointer(keras.callbacks.Callback):
    """Writes a resumable checkpoint to the store after every epoch, so a killed worker picks up where it was.

    Each epoch ``k`` writes ``<prefix>/epoch-<k>/``: ``model.weights.h5`` (the model's weights; Keras puts the
    compiled model's Adam variables in it too), ``state.npz`` (the best weights so far and the Dropout
    seed-generator state, which ``.weights.h5`` omits), then ``<prefix>/state.json`` (epoch, history,
    early-stopping state, run configuration) last, and only then deletes the previous epoch's folder.
    ``state.json`` always names a complete folder, so a kill at any point leaves a consistent checkpoint.
    ``fit_head(checkpoint=...)`` and ``finetune.fine_tune(checkpoint=...)`` bind it and resume from it.
    """

    def __init__(self, store: ObjectStore, key_prefix: str) -> None:
        super().__init__()
        self.store = store
        self.prefix = key_prefix.strip("/")
        self._config: dict | None = None
        self._history: list[dict[str, float]] = []
        self._early_stopping: ResumableEarlyStopping | None = None
        self._max_epochs = 0

    @property
    def state_key(self) -> str:
        return f"{self.prefix}/state.json"

    def load_state(self) -> dict | None:
        try:
            return self.store.get_json(self.state_key)
        except NotFound:
            return None

    def bind(
        self, config: dict, history: list, early_stopping: ResumableEarlyStopping, max_epochs: int
    ) -> None:
        self._config, self._history = config, history
        self._early_stopping, self._max_epochs = early_stopping, max_epochs

    def restore(self, model: keras.Model, config: dict) -> Resume | None:
        """Load the checkpoint into ``model`` (weights, optimizer, RNG state); None if there is none."""
        state = self.load_state()
        if state is None:
            return None
        if state["config"] != config:
            raise ValueError(
                f"checkpoint {self.state_key} belongs to a different run: {state['config']} != {config}"
            )
        folder = state["folder"]
        if not model.optimizer.built:  # an unbuilt optimizer would leave Adam's moments out of load_weights
            model.optimizer.build(model.trainable_variables)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model.weights.h5"
            path.write_bytes(self.store.get_bytes(f"{folder}/model.weights.h5"))
            model.load_weights(path)
        with np.load(io.BytesIO(self.store.get_bytes(f"{folder}/state.npz")), allow_pickle=False) as npz:
            arrays = dict(npz)
        for i, variable in enumerate(_state_variables(model)):
            variable.assign(arrays[f"rng_{i}"])
        best = [arrays[f"best_{i}"] for i in range(len(model.weights))]
        return Resume(state["epoch"], state["history"], state["early_stopping"], best, state["finished"])

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self._early_stopping is None or self._config is None:
            raise RuntimeError("a Checkpointer is bound by its trainer (bind), not just passed to fit()")
        folder = f"{self.prefix}/epoch-{epoch:04d}"
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model.weights.h5"
            self.model.save_weights(path)
            self.store.put_bytes(f"{folder}/model.weights.h5", path.read_bytes())
        arrays = {f"best_{i}": w for i, w in enumerate(self._early_stopping.best_weights)}
        arrays.update(
            {f"rng_{i}": keras.ops.convert_to_numpy(v) for i, v in enumerate(_state_variables(self.model))}
        )
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        self.store.put_bytes(f"{folder}/state.npz", buf.getvalue())
        self.store.put_json(
            self.state_key,
            {
                "epoch": epoch,
                "folder": folder,
                "finished": bool(self.model.stop_training) or epoch + 1 >= self._max_epochs,
                "history": self._history,
                "early_stopping": self._early_stopping.state(),
                "config": self._config,
            },
        )
        for info in list(self.store.list(f"{self.prefix}/epoch-")):
            if not info.key.startswith(folder + "/"):
                self.store.delete(info.key)


def _summary(
    history: list[dict[str, float]], best_epoch: int, stopped: bool, resumed_from: int | None
) -> dict:
    best = history[best_epoch]
    metrics = [k for k in history[0] if k != "epoch"]
    return {
        "epochs_run": len(history),
        "best_epoch": best_epoch,
        "stopped_early": stopped,
        "resumed_from_epoch": resumed_from,
        **{k: best[k] for k in metrics},
        "history": {k: [h[k] for h in history] for k in metrics},
    }


def fit_head(
    data: HeadData,
    *,
    kind: HeadKind,
    units: int,
    dropout: bool,
    max_epochs: int,
    batch_size: int,
    seed: int,
    patience: int = 3,
    learning_rate: float = 1e-3,
    dropout_rate: float = DROPOUT_RATE,
    first_units: int = FIRST_UNITS,
    l2: float = 0.0,
    input_dropout: float = 0.0,
    label_smoothing: float = 0.0,
    normalize: bool = False,
    checkpoint: Checkpointer | None = None,
    on_epoch: EpochHook | None = None,
) -> tuple[keras.Model, dict]:
    """Build, compile and train one head; returns it with the best epoch's weights and a JSON-able summary.

    ``units``, ``dropout``, ``first_units``, ``dropout_rate``, ``input_dropout``, ``l2``, ``normalize`` shape
    the head (``models.build_head``; ``normalize`` adapts its ``Normalization`` layer on ``data.x_train``),
    ``learning_rate``, ``label_smoothing`` and ``batch_size`` its training (``models.compile_head``); the
    defaults are the report's head and training (``tuning.HP_DEFAULTS``). ``data``'s sample weights, when it
    has them, weight the training and validation losses.

    The summary holds ``epochs_run``, ``best_epoch`` (0-based), ``stopped_early``, the best epoch's metrics
    (``loss``, ``val_loss``, ``val_cross_entropy``, ``val_accuracy``, ...) and ``history`` (each metric per
    epoch). With a ``checkpoint`` that exists, training resumes after its last epoch with its weights, optimizer
    state and early-stopping state (a finished checkpoint just returns the best weights); the result equals an
    uninterrupted run's. ``on_epoch(epoch, logs)`` runs after each epoch (and after its checkpoint).
    """
    if max_epochs < 1 or batch_size < 1:
        raise ValueError("max_epochs and batch_size must be >= 1")
    keras.utils.set_random_seed(seed)
    head = build_head(
        data.input_dim,
        units=units,
        dropout=dropout,
        n_outputs=data.n_outputs,
        dropout_rate=dropout_rate,
        first_units=first_units,
        l2=l2,
        input_dropout=input_dropout,
        normalize_on=data.x_train if normalize else None,
        seed=seed,
    )
    compile_head(head, kind, learning_rate=learning_rate, label_smoothing=label_smoothing)
    # Adam's moments exist before the first step: created inside it, they make TF trace the step twice (measured
    # ~20% of a small head's fit). A Python PyDataset feeds the batches: backend-agnostic, unlike tf.data.
    head.optimizer.build(head.trainable_variables)
    config = {  # what a checkpoint must match to be resumed (JSON types, to compare with state.json)
        "kind": str(kind),
        "units": int(units),
        "dropout": bool(dropout),
        "dropout_rate": float(dropout_rate),
        "first_units": int(first_units),
        "l2": float(l2),
        "input_dropout": float(input_dropout),
        "label_smoothing": float(label_smoothing),
        "normalize": bool(normalize),
        "max_epochs": int(max_epochs),
        "batch_size": int(batch_size),
        "seed": int(seed),
        "patience": int(patience),
        "learning_rate": float(learning_rate),
        "input_dim": data.input_dim,
        "n_outputs": data.n_outputs,
        "n_train": len(data.x_train),
        "n_val": len(data.x_val),
        "weighted": data.w_train is not None,
    }
    resume = checkpoint.restore(head, config) if checkpoint is not None else None
    history: list[dict[str, float]] = list(resume.history) if resume else []
    if resume is not None and resume.finished:
        head.set_weights(resume.best_weights)
        stopped = len(history) < max_epochs
        return head, _summary(history, resume.early_stopping["best_epoch"], stopped, resume.epoch + 1)
    train = _EpochShuffled(data.x_train, data.y_train, batch_size, seed, data.w_train)
    early_stopping = ResumableEarlyStopping(
        patience, resume.early_stopping if resume else None, resume.best_weights if resume else None
    )
    callbacks: list[keras.callbacks.Callback] = [_Hooks(train, history), early_stopping]
    if checkpoint is not None:
        checkpoint.bind(config, history, early_stopping, max_epochs)
        callbacks.append(checkpoint)
    if on_epoch is not None:
        callbacks.append(EpochProgress(on_epoch))
    initial_epoch = resume.epoch + 1 if resume else 0
    head.fit(
        train,
        validation_data=(data.x_val, data.y_val)
        if data.w_val is None
        else (data.x_val, data.y_val, data.w_val),
        validation_batch_size=batch_size,
        epochs=max_epochs,
        initial_epoch=initial_epoch,
        shuffle=False,  # the order comes from _EpochShuffled
        callbacks=callbacks,
        verbose=0,
    )
    summary = _summary(
        history,
        early_stopping.best_epoch,
        early_stopping.stopped_epoch > 0,
        initial_epoch if resume else None,
    )
    return head, summary


HEAD_HP = (
    "dropout_rate",
    "input_dropout",
    "l2",
    "label_smoothing",
    "normalize",
    "learning_rate",
    "batch_size",
)
"""``fit_head`` keywords that are hyperparameters besides ``units`` and ``dropout`` (recorded in summaries)."""


def _hp(units: int, dropout: bool, fit_kwargs: dict[str, Any]) -> dict[str, Any]:
    """The hyperparameters a head was trained with, for its summary: the report's two and any others given."""
    return {"units": units, "dropout": dropout, **{k: fit_kwargs[k] for k in HEAD_HP if k in fit_kwargs}}


def train_multiclass(
    data: HeadData, *, units: int, dropout: bool, **fit_kwargs: Any
) -> tuple[keras.Model, dict]:
    """The report's single CNN head (softmax over the classes); ``fit_kwargs`` go to ``fit_head``."""
    head, summary = fit_head(data, kind="multiclass", units=units, dropout=dropout, **fit_kwargs)
    return head, {"kind": "multiclass", "hp": _hp(units, dropout, fit_kwargs), **summary}


def train_ova_member(
    genre: str, data: HeadData, *, units: int, dropout: bool, **fit_kwargs: Any
) -> tuple[keras.Model, dict]:
    """One one-vs-all member (sigmoid unit) for ``genre``; ``fit_kwargs`` go to ``fit_head``."""
    head, summary = fit_head(data, kind="binary", units=units, dropout=dropout, **fit_kwargs)
    return head, {"kind": "binary", "genre": genre, "hp": _hp(units, dropout, fit_kwargs), **summary}

"""Optional fine-tune stage: unfreeze the backbone's top blocks and train the whole classifier from the best head.

The retrain trains every head on cached features of a frozen backbone (``features.py``); that is the report's
model and most of the accuracy for a fraction of the cost. When it pays, a second stage adapts the top of the
backbone to posters: the registered multi-class classifier (backbone + trained head) is trained end to end from
pixels with only its top ``top_blocks`` blocks and the head trainable, every BatchNormalization layer of the
backbone frozen (Keras runs a non-trainable BatchNormalization in inference mode, so its ImageNet statistics
are kept, as Keras' transfer-learning guide advises), Adam at a low learning rate, and early stopping on the
validation loss. Its result replaces the frozen candidate only if it lowers the validation loss.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import keras

from postergenre.models import CROSS_ENTROPY, HeadKind, compile_head
from postergenre.training import Checkpointer, EpochProgress, ResumableEarlyStopping

_BLOCK = re.compile(r"conv\d+_block\d+|[^_]+")
"""A layer's block: ``block6h`` of ``block6h_se_reduce`` (EfficientNet, Lite0, tiny), ``conv5_block3`` of
``conv5_block3_2_conv`` (ResNet50), ``top``/``head``/``stem`` of their convolutions."""


def _leaf_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """Layers in call order, nested models (ResNet50 sits inside a preprocessing wrapper) flattened."""
    leaves = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            leaves.extend(_leaf_layers(layer))
        else:
            leaves.append(layer)
    return leaves


def block_of(layer_name: str) -> str:
    return _BLOCK.match(layer_name).group(0)


def backbone_blocks(backbone: keras.Model) -> list[str]:
    """The backbone's blocks that hold weights, bottom to top (``["stem", "block1a", ..., "top"]``)."""
    blocks: list[str] = []
    for layer in _leaf_layers(backbone):
        if layer.weights and block_of(layer.name) not in blocks:
            blocks.append(block_of(layer.name))
    return blocks


def unfreeze_top(backbone: keras.Model, top_blocks: int) -> list[str]:
    """Make only the top ``top_blocks`` blocks trainable, their BatchNormalization layers excepted.

    Returns the names of the layers left trainable. Everything else, every BatchNormalization included,
    is frozen: its weights do not change and it normalises with its moving statistics.
    """
    blocks = backbone_blocks(backbone)
    if not 1 <= top_blocks <= len(blocks):
        raise ValueError(f"top_blocks must be in 1..{len(blocks)} for {backbone.name}, got {top_blocks}")
    top = set(blocks[-top_blocks:])
    backbone.trainable = True  # containers trainable, then each leaf decides
    trainable = []
    for layer in _leaf_layers(backbone):
        layer.trainable = (
            block_of(layer.name) in top
            and bool(layer.weights)
            and not isinstance(layer, keras.layers.BatchNormalization)
        )
        if layer.trainable:
            trainable.append(layer.name)
    return trainable


def backbone_of(classifier: keras.Model) -> keras.Model:
    """The backbone inside a ``models.build_classifier`` model (the one nested model that is not the head)."""
    nested = [layer for layer in classifier.layers if isinstance(layer, keras.Model) and layer.name != "head"]
    if len(nested) != 1:
        raise ValueError(f"{classifier.name} is not a backbone + head classifier")
    return nested[0]


class _EpochLog(keras.callbacks.Callback):
    """Records each epoch's logs (runs first, so a checkpoint written after it includes the epoch)."""

    def __init__(self, history: list[dict]) -> None:
        super().__init__()
        self.history = history

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.history.append({"epoch": epoch, **{k: float(v) for k, v in (logs or {}).items()}})


def fine_tune(
    classifier: keras.Model,
    train,
    val,
    *,
    kind: HeadKind,
    top_blocks: int = 2,
    learning_rate: float = 1e-5,
    max_epochs: int = 10,
    patience: int = 3,
    seed: int = 0,
    checkpoint: Checkpointer | None = None,
    on_epoch: Callable[[int, dict], None] | None = None,
) -> tuple[keras.Model, dict]:
    """Fine-tune ``classifier`` in place on ``train`` (batches of poster, target), early-stopped on ``val``.

    Returns the classifier with its best epoch's weights (or its starting weights when no epoch beat them) and
    a JSON-able summary: ``val_cross_entropy_before`` / ``val_loss_before`` (the starting model on ``val``),
    ``val_cross_entropy`` / ``val_loss`` (the best fine-tuned epoch, by cross-entropy, as early stopping picks
    it), ``pays`` (whether fine-tuning lowered the validation cross-entropy), the trainable layers, the training
    time and the history. With a ``checkpoint`` (``training.Checkpointer``) every epoch is saved to the store
    and a killed run resumes after its last finished epoch, from the same starting classifier; ``train`` then
    starts its order afresh, so only an unshuffled ``train`` resumes bit for bit.
    """
    keras.utils.set_random_seed(seed)
    backbone = backbone_of(classifier)
    trainable = unfreeze_top(backbone, top_blocks)
    classifier.get_layer("head").trainable = True
    compile_head(classifier, kind, learning_rate=learning_rate)
    classifier.optimizer.build(classifier.trainable_variables)  # before fit: one trace of the step, not two
    before = classifier.evaluate(val, verbose=0, return_dict=True)
    start_weights = classifier.get_weights()
    config = {
        "kind": kind,
        "top_blocks": top_blocks,
        "learning_rate": learning_rate,
        "max_epochs": max_epochs,
        "patience": patience,
        "seed": seed,
        "trainable_layers": trainable,
    }
    resume = checkpoint.restore(classifier, config) if checkpoint is not None else None
    history: list[dict] = list(resume.history) if resume else []
    started = time.perf_counter()
    if resume is not None and resume.finished:
        classifier.set_weights(resume.best_weights)
    else:
        stopping = ResumableEarlyStopping(
            patience, resume.early_stopping if resume else None, resume.best_weights if resume else None
        )
        callbacks: list[keras.callbacks.Callback] = [_EpochLog(history), stopping]
        if checkpoint is not None:
            checkpoint.bind(config, history, stopping, max_epochs)
            callbacks.append(checkpoint)
        if on_epoch is not None:
            callbacks.append(EpochProgress(on_epoch))
        classifier.fit(
            train,
            validation_data=val,
            epochs=max_epochs,
            initial_epoch=resume.epoch + 1 if resume else 0,
            shuffle=False,  # the training set comes shuffled (make_dataset reshuffles it every epoch)
            callbacks=callbacks,
            verbose=0,
        )
    seconds = time.perf_counter() - started
    watched = f"val_{CROSS_ENTROPY}"  # what early stopping watches: L2 penalties are not part of the fit's quality
    best_epoch = min(range(len(history)), key=lambda i: history[i][watched])
    pays = history[best_epoch][watched] < before[CROSS_ENTROPY]
    if not pays:
        classifier.set_weights(start_weights)
    backbone.trainable = False  # what gets saved and served is a plain inference model again
    return classifier, {
        "pays": bool(pays),
        "val_loss_before": float(before["loss"]),
        "val_cross_entropy_before": float(before[CROSS_ENTROPY]),
        "val_accuracy_before": float(before["accuracy"]),
        "val_loss": float(history[best_epoch]["val_loss"]),
        "val_cross_entropy": float(history[best_epoch][watched]),
        "val_accuracy": float(history[best_epoch]["val_accuracy"]),
        "best_epoch": best_epoch,
        "epochs_run": len(history),
        "resumed_from_epoch": resume.epoch + 1 if resume else None,
        "top_blocks": top_blocks,
        "learning_rate": learning_rate,
        "trainable_layers": trainable,
        "seconds": round(seconds, 2),
        "history": {k: [h[k] for h in history] for k in history[0] if k != "epoch"},
    }

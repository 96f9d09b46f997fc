"""The fine-tune stage: which layers it unfreezes, what stays frozen, and when its result is kept."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from postergenre.finetune import backbone_blocks, backbone_of, block_of, fine_tune, unfreeze_top
from postergenre.models import build_backbone, build_classifier, build_head


@pytest.mark.parametrize(
    ("layer", "block"),
    [
        ("block6h_se_reduce", "block6h"),  # EfficientNetV2B0
        ("block15_project_bn", "block15"),  # Lite0
        ("conv5_block3_2_conv", "conv5_block3"),  # ResNet50
        ("top_conv", "top"),
        ("stem_bn", "stem"),
        ("block2_conv", "block2"),  # tiny
    ],
)
def test_layers_belong_to_their_named_block(layer, block):
    assert block_of(layer) == block


def test_tiny_blocks_bottom_to_top_and_only_the_top_convolutions_unfrozen():
    backbone = build_backbone("tiny", weights="none", image_size=32)
    assert backbone_blocks(backbone) == ["block1", "block2", "block3"]
    assert unfreeze_top(backbone, 1) == ["block3_conv"]
    assert unfreeze_top(backbone, 2) == ["block2_conv", "block3_conv"]
    assert [w.path for w in backbone.trainable_weights] == ["block2_conv/kernel", "block3_conv/kernel"]
    assert all(not layer.trainable for layer in backbone.layers if isinstance(layer, keras.layers.BatchNormalization))
    with pytest.raises(ValueError, match="top_blocks must be in 1..3"):
        unfreeze_top(backbone, 4)


@pytest.mark.slow
def test_resnet50_inside_its_preprocessing_wrapper_unfreezes_its_last_block_only():
    backbone = build_backbone("resnet50", weights="none", image_size=32)
    assert backbone_blocks(backbone)[-2:] == ["conv5_block2", "conv5_block3"]
    unfrozen = unfreeze_top(backbone, 1)
    assert unfrozen == ["conv5_block3_1_conv", "conv5_block3_2_conv", "conv5_block3_3_conv"]
    assert len(backbone.trainable_weights) == 6  # kernel and bias of three convolutions, no BatchNorm


def _classifier(seed: int = 0) -> keras.Model:
    backbone = build_backbone("tiny", weights="none", image_size=32, seed=seed)
    head = build_head(32, units=64, dropout=False, n_outputs=3, seed=seed)
    return build_classifier(backbone, head)


def _posters(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Three 'genres' that differ by colour, plus noise: something convolutions can learn."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.uniform(0, 80, (n, 32, 32, 3)).astype("float32")
    x[np.arange(n), :, :, y] += 150
    return x, np.eye(3, dtype="float32")[y]


def _data(n: int, seed: int) -> tf.data.Dataset:
    return tf.data.Dataset.from_tensor_slices(_posters(n, seed)).batch(32)


def _weights_by_path(model: keras.Model) -> dict[str, np.ndarray]:
    return {w.path: keras.ops.convert_to_numpy(w).copy() for w in model.weights}


def test_fine_tuning_changes_only_the_top_blocks_and_the_head():
    model = _classifier()
    before = _weights_by_path(model)
    model, summary = fine_tune(model, _data(192, 1), _data(96, 2), kind="multiclass", top_blocks=1,
                               learning_rate=1e-3, max_epochs=3)
    after = _weights_by_path(model)
    assert summary["pays"], summary  # a random backbone's top convolution learns the colours at once
    assert summary["val_cross_entropy"] < summary["val_cross_entropy_before"]
    # the kept epoch is the one early stopping watches for: the lowest validation cross-entropy
    assert summary["val_cross_entropy"] == min(summary["history"]["val_cross_entropy"])
    changed = {path for path in before if not np.array_equal(before[path], after[path])}
    assert "block3_conv/kernel" in changed and any(p.startswith("fc2/") for p in changed)
    frozen = [p for p in before if p.startswith(("block1", "block2")) or p.startswith("block3_bn")]
    assert frozen and not changed.intersection(frozen)  # BatchNorm moving statistics included
    assert summary["trainable_layers"] == ["block3_conv"]
    assert not backbone_of(model).trainable  # saved and served as a frozen inference model again


def test_a_fine_tune_that_does_not_lower_the_validation_loss_is_undone():
    model, first = fine_tune(_classifier(), _data(192, 1), _data(96, 2), kind="multiclass", top_blocks=1,
                             learning_rate=1e-3, max_epochs=3)
    before = _weights_by_path(model)
    x, y = _posters(192, 3)
    wrong = tf.data.Dataset.from_tensor_slices((x, np.roll(y, 1, axis=1))).batch(32)  # every label wrong
    model, summary = fine_tune(model, wrong, _data(96, 2), kind="multiclass", top_blocks=2,
                               learning_rate=1e-2, max_epochs=2)
    assert not summary["pays"] and summary["epochs_run"] == 2
    assert summary["val_cross_entropy"] > summary["val_cross_entropy_before"]
    after = _weights_by_path(model)
    assert all(np.array_equal(before[p], after[p]) for p in before)  # trained weights and BN statistics


class Killed(Exception):
    pass


def test_a_killed_fine_tune_resumes_from_its_store_checkpoint_like_an_uninterrupted_one(tmp_path):
    from postergenre.storage import open_store
    from postergenre.training import Checkpointer

    train, val = _data(128, 1), _data(64, 2)  # unshuffled: every epoch sees the same order, so resume is exact
    args = dict(kind="multiclass", top_blocks=1, learning_rate=1e-3, max_epochs=3, patience=5)
    reference, ref_summary = fine_tune(_classifier(), train, val, **args)
    store = open_store(f"file://{tmp_path}")

    def kill_at_1(epoch, logs):
        if epoch == 1:
            raise Killed

    with pytest.raises(Killed):
        fine_tune(_classifier(), train, val, checkpoint=Checkpointer(store, "ft"), on_epoch=kill_at_1, **args)
    assert store.get_json("ft/state.json")["epoch"] == 1
    resumed, summary = fine_tune(_classifier(), train, val, checkpoint=Checkpointer(store, "ft"), **args)
    assert summary["resumed_from_epoch"] == 2 and summary["history"] == ref_summary["history"]
    for got, want in zip(resumed.get_weights(), reference.get_weights(), strict=True):
        np.testing.assert_array_equal(got, want)
    again, finished = fine_tune(_classifier(), train, val, checkpoint=Checkpointer(store, "ft"), **args)
    assert finished["history"] == ref_summary["history"]  # a finished checkpoint trains nothing more
    with pytest.raises(ValueError, match="different run"):
        fine_tune(_classifier(), train, val, checkpoint=Checkpointer(store, "ft"), **{**args, "top_blocks": 2})

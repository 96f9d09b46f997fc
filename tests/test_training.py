"""Heads trained on cached features: alignment, early stopping, exact resume after a kill, output shapes."""

import numpy as np
import pandas as pd
import pytest

from postergenre.storage import open_store
from postergenre.training import (
    Checkpointer,
    HeadData,
    binary_data,
    fit_head,
    multiclass_data,
    train_multiclass,
    train_ova_member,
)

DIM, CLASSES, BATCH = 24, ["Action", "Comedy", "Drama"], 32


def blobs(rng: np.random.Generator, n: int, centers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``n`` noisy points around ``centers`` (one per class) and their class indices."""
    cls = rng.integers(0, len(centers), n)
    return (centers[cls] + rng.normal(0, 1.5, (n, centers.shape[1]))).astype(np.float32), cls


@pytest.fixture(scope="module")
def learnable() -> HeadData:
    """Three separable-ish classes; val from the same distribution, so val loss falls for a while."""
    rng = np.random.default_rng(0)
    centers = rng.normal(0, 1, (3, DIM))
    (xt, ct), (xv, cv) = blobs(rng, 256, centers), blobs(rng, 96, centers)
    return HeadData(xt, np.eye(3, dtype=np.float32)[ct], xv, np.eye(3, dtype=np.float32)[cv])


@pytest.fixture(scope="module")
def contradicted() -> HeadData:
    """Binary task whose val labels are the opposite of the train rule: val loss rises as the head learns."""
    rng = np.random.default_rng(1)
    centers = rng.normal(0, 2, (2, DIM))
    (xt, ct), (xv, cv) = blobs(rng, 256, centers), blobs(rng, 96, centers)
    return HeadData(xt, ct.reshape(-1, 1).astype(np.float32), xv, (1 - cv).reshape(-1, 1).astype(np.float32))


def test_multiclass_alignment_drops_movies_without_features():
    rng = np.random.default_rng(2)
    labels = pd.DataFrame(
        {
            "movie_id": np.arange(1, 13),
            "genre": (CLASSES * 4),
            "split": ["train"] * 6 + ["val"] * 3 + ["test"] * 3,
        }
    )
    # Features per split, in a different order, without movies 2 (train) and 8 (val), plus an unlabelled 99.
    features = {}
    for split, ids in {"train": [6, 5, 4, 3, 1, 99], "val": [9, 7], "test": [12, 11, 10]}.items():
        ids = np.array(ids, dtype=np.int64)
        feats = np.column_stack([ids, rng.normal(size=(len(ids), DIM - 1))]).astype(np.float16)
        features[split] = (ids, feats)
    data = multiclass_data(features, labels, CLASSES)
    assert data.dropped == {"train": 1, "val": 1, "test": 0}
    assert data.movie_ids["train"].tolist() == [1, 3, 4, 5, 6] and data.movie_ids["val"].tolist() == [7, 9]
    for x, split in ((data.x_train, "train"), (data.x_val, "val"), (data.x_test, "test")):
        assert x.dtype == np.float32
        np.testing.assert_array_equal(x[:, 0], data.movie_ids[split])  # each row is its movie's vector
    genre_of = dict(zip(labels["movie_id"], labels["genre"], strict=True))
    expected = [CLASSES.index(genre_of[m]) for m in data.movie_ids["train"]]
    assert data.y_train.argmax(axis=1).tolist() == expected and data.y_train.sum(axis=1).tolist() == [1] * 5
    assert data.n_outputs == 3 and data.input_dim == DIM
    without_test = multiclass_data({k: features[k] for k in ("train", "val")}, labels, CLASSES)
    assert without_test.x_test is None and without_test.y_test is None
    with pytest.raises(ValueError, match="'val'"):
        multiclass_data({"train": features["train"]}, labels, CLASSES)


def test_binary_data_has_one_target_column():
    ova = pd.DataFrame(
        {"movie_id": [1, 2, 3, 4], "label": [1, 0, 0, 1], "split": ["train", "train", "val", "val"]}
    )
    features = {
        s: (np.array(ids), np.ones((2, DIM), np.float16)) for s, ids in (("train", [1, 2]), ("val", [4, 5]))
    }
    data = binary_data(features, ova)
    assert data.y_train.tolist() == [[1.0], [0.0]] and data.y_val.tolist() == [[1.0]]
    assert data.dropped == {"train": 0, "val": 1} and data.n_outputs == 1


@pytest.fixture(scope="module")
def stopped(contradicted):
    head, summary = train_ova_member(
        "Western", contradicted, units=64, dropout=False, max_epochs=8, batch_size=BATCH, seed=0
    )
    return head, summary


def test_early_stopping_stops_patience_epochs_after_the_best_and_restores_it(stopped, contradicted):
    head, summary = stopped
    val_losses = summary["history"]["val_loss"]
    assert summary["stopped_early"] and summary["epochs_run"] < 8
    # Early stopping watches the plain cross-entropy: for the report's head (no smoothing, no L2), the loss.
    np.testing.assert_allclose(summary["history"]["val_cross_entropy"], val_losses, rtol=1e-5)
    assert summary["best_epoch"] == int(np.argmin(summary["history"]["val_cross_entropy"]))
    assert summary["epochs_run"] == summary["best_epoch"] + 3 + 1  # patience 3
    assert summary["val_loss"] == min(val_losses) and len(summary["history"]["loss"]) == summary["epochs_run"]
    restored = head.evaluate(contradicted.x_val, contradicted.y_val, batch_size=BATCH, verbose=0)[0]
    assert restored == pytest.approx(min(val_losses), rel=1e-6)


# The regularised head (Normalization, input dropout, L2, label smoothing): resuming must restore all of it.
RESUME_ARGS = dict(
    units=64,
    dropout=True,
    max_epochs=5,
    batch_size=BATCH,
    seed=3,
    normalize=True,
    input_dropout=0.2,
    l2=1e-4,
    label_smoothing=0.1,
)


@pytest.fixture(scope="module")
def reference(learnable):
    """An uninterrupted multi-class run, and the epochs its ``on_epoch`` hook saw."""
    seen: list[int] = []
    head, summary = train_multiclass(learnable, on_epoch=lambda e, logs: seen.append(e), **RESUME_ARGS)
    return head, summary, seen


def test_binary_and_multiclass_heads_have_their_output_shapes(stopped, contradicted, reference, learnable):
    head, summary = stopped
    assert summary["kind"] == "binary" and summary["genre"] == "Western"
    out = np.asarray(head.predict(contradicted.x_val[:5], verbose=0))
    assert out.shape == (5, 1) and ((out >= 0) & (out <= 1)).all()
    multi, info, seen = reference
    probs = np.asarray(multi.predict(learnable.x_val[:5], verbose=0))
    assert probs.shape == (5, 3) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    assert info["kind"] == "multiclass"
    assert info["hp"] == {
        "units": 64,
        "dropout": True,
        "normalize": True,
        "input_dropout": 0.2,
        "l2": 1e-4,
        "label_smoothing": 0.1,
        "batch_size": BATCH,
    }
    assert np.isfinite(info["val_loss"]) and info["val_accuracy"] > 1 / 3  # it learned something
    assert seen == list(range(info["epochs_run"]))


class Killed(Exception):
    pass


@pytest.mark.slow
def test_resume_after_a_kill_ends_like_an_uninterrupted_run(learnable, reference, tmp_path):
    reference, ref_summary, _ = reference
    args = dict(kind="multiclass", **RESUME_ARGS)
    assert (
        ref_summary["best_epoch"] > 2
    )  # the kill below lands before the best epoch: resumed training counts

    store = open_store(f"file://{tmp_path}")

    def kill_at_2(epoch, logs):
        if epoch == 2:
            raise Killed

    with pytest.raises(Killed):
        fit_head(learnable, checkpoint=Checkpointer(store, "ck/run"), on_epoch=kill_at_2, **args)
    assert store.get_json("ck/run/state.json")["epoch"] == 2
    resumed, summary = fit_head(learnable, checkpoint=Checkpointer(store, "ck/run"), **args)
    assert summary["resumed_from_epoch"] == 3
    assert summary["history"] == ref_summary["history"] and summary["best_epoch"] == ref_summary["best_epoch"]
    for got, want in zip(resumed.get_weights(), reference.get_weights(), strict=True):
        np.testing.assert_array_equal(got, want)
    # Only the last epoch's files stay next to state.json.
    folders = {info.key.rsplit("/", 1)[0] for info in store.list("ck/run/epoch-")}
    assert folders == {f"ck/run/epoch-{ref_summary['epochs_run'] - 1:04d}"}

    # A finished checkpoint returns the best weights without training again.
    again, again_summary = fit_head(
        learnable, checkpoint=Checkpointer(store, "ck/run"), on_epoch=kill_at_2, **args
    )
    assert again_summary["history"] == ref_summary["history"]
    for got, want in zip(again.get_weights(), reference.get_weights(), strict=True):
        np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="different run"):
        fit_head(learnable, checkpoint=Checkpointer(store, "ck/run"), **{**args, "units": 128})


def test_epoch_batches_follow_the_seeded_order_whatever_epoch_training_starts_at():
    from postergenre.training import _EpochShuffled

    n, batch = 10, 4
    x = np.arange(n, dtype=np.float32).reshape(-1, 1) * np.ones((1, 3), np.float32)
    y = np.arange(n, dtype=np.float32).reshape(-1, 1)
    data = _EpochShuffled(x, y, batch, seed=5)
    for epoch in (3, 2, 4):  # a resumed run starts at a later epoch: its order must not depend on that
        data.set_epoch(epoch)
        batches = [data[i] for i in range(len(data))]
        assert [len(by) for _, by in batches] == [4, 4, 2]  # the epoch ends with its own short batch
        rows = np.concatenate([by[:, 0] for _, by in batches]).astype(int)
        assert rows.tolist() == np.random.default_rng([5, epoch]).permutation(n).tolist()
        for bx, by in batches:
            np.testing.assert_array_equal(bx, by * np.ones((1, 3), np.float32))  # features stay with targets


def test_fit_head_is_deterministic_and_takes_any_float_features(learnable):
    args = dict(kind="multiclass", units=32, dropout=True, max_epochs=2, batch_size=BATCH, seed=4)
    small = HeadData(learnable.x_train[:100], learnable.y_train[:100], learnable.x_val, learnable.y_val)
    first, summary = fit_head(small, **args)
    as_float64 = HeadData(
        *(a.astype(np.float64) for a in (small.x_train, small.y_train, small.x_val, small.y_val))
    )
    second, summary64 = fit_head(as_float64, **args)
    assert summary64["history"] == summary["history"]
    for a, b in zip(first.get_weights(), second.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_weight_column_becomes_sample_weights_unless_all_ones():
    labels = pd.DataFrame(
        {
            "movie_id": [1, 2, 3, 4],
            "genre": ["Action", "Comedy", "Drama", "Action"],
            "split": ["train", "train", "val", "val"],
            "weight": [0.5, 2.0, 1.0, 1.0],
        }
    )
    features = {
        s: (np.array(ids), np.ones((2, DIM), np.float16)) for s, ids in (("train", [1, 2]), ("val", [3, 4]))
    }
    data = multiclass_data(features, labels, CLASSES)
    assert data.w_train.tolist() == [0.5, 2.0] and data.w_val is None  # val weighs 1 everywhere: no weights
    unweighted = multiclass_data(features, labels.assign(weight=1.0), CLASSES)
    assert unweighted.w_train is None and unweighted.w_val is None
    assert multiclass_data(features, labels.drop(columns="weight"), CLASSES).w_train is None


def test_sample_weights_steer_the_head():
    """Features without signal, class 0 weighted 20x in training and validation: the head learns that prior
    (20 / 22 of the weight) where the unweighted head learns about a third."""
    rng = np.random.default_rng(4)
    x, xv = rng.normal(size=(300, DIM)).astype(np.float32), rng.normal(size=(96, DIM)).astype(np.float32)
    y, yv = (np.eye(3, dtype=np.float32)[rng.integers(0, 3, n)] for n in (300, 96))
    args = dict(
        kind="multiclass", units=32, dropout=False, max_epochs=8, batch_size=BATCH, seed=1, learning_rate=1e-2
    )
    w, wv = (np.where(t.argmax(1) == 0, 20.0, 1.0).astype(np.float32) for t in (y, yv))
    plain, _ = fit_head(HeadData(x, y, xv, yv), **args)
    heavy, summary = fit_head(HeadData(x, y, xv, yv, w_train=w, w_val=wv), **args)
    mass = [float(np.mean(m.predict(xv, verbose=0)[:, 0])) for m in (plain, heavy)]
    assert mass[0] < 0.5 < 0.7 < mass[1]
    assert np.isfinite(summary["val_cross_entropy"])


def test_label_smoothing_and_l2_leave_the_selection_metric_comparable(learnable):
    """val_loss grows with smoothing and the L2 penalty; val_cross_entropy measures only the predictions."""
    args = dict(kind="multiclass", units=32, dropout=False, max_epochs=2, batch_size=BATCH, seed=2)
    _, smooth = fit_head(learnable, label_smoothing=0.2, l2=1e-2, **args)
    assert smooth["val_loss"] > smooth["val_cross_entropy"]
    _, plain = fit_head(learnable, **args)
    assert plain["val_loss"] == pytest.approx(plain["val_cross_entropy"], rel=1e-5)

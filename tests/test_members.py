"""OvA members as bags of the report's 70/30 sets: every bag keeps the design, the member averages the bags."""

import tempfile
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

from postergenre.labels import prepare_labels
from postergenre.members import average_heads, bag_data, bag_sets, member_hp, train_bagged_member
from postergenre.models import build_head
from tests.test_labels import neg_target, skewed_rows

BAGS = 4


@pytest.fixture(scope="module")
def prepared():
    rows = skewed_rows(4000, seed=2)
    return {b: prepare_labels(rows, seed=5, balance=b) for b in ("undersample", "weighted")}


def _train(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame["split"].astype(str) == "train"]


@pytest.mark.parametrize("balance", ["undersample", "weighted"])
def test_every_bag_is_a_70_30_set_with_uniform_negatives_and_the_same_held_out_rows(prepared, balance):
    p = prepared[balance]
    genre_of = p.labels.set_index("movie_id")["genre"].astype(str)
    train_ids = set(_train(p.labels)["movie_id"])
    for genre in ("Drama", "Western", "War"):
        ova = p.ova[genre]
        sets = bag_sets(p.labels, ova, genre, p.seed, balance, BAGS)
        assert len(sets) == BAGS and sets[0] is ova  # bag 0: the dataset's own set, so bags=1 is the report's
        held_out = ova[ova["split"].astype(str) != "train"].reset_index(drop=True)
        positives = set(_train(p.labels).loc[_train(p.labels)["genre"].astype(str) == genre, "movie_id"])
        negative_sets = []
        for frame in sets:
            assert list(frame.columns) == list(ova.columns)
            assert_frame_equal(frame[frame["split"].astype(str) != "train"].reset_index(drop=True), held_out)
            train = _train(frame)
            assert set(train["movie_id"]) <= train_ids and train["movie_id"].is_unique
            assert set(train.loc[train["label"] == 1, "movie_id"]) == positives  # every train positive
            negatives = train.loc[train["label"] == 0, "movie_id"]
            per_genre = genre_of.loc[negatives].value_counts()
            assert genre not in per_genre.index
            if balance == "undersample":  # the report's quota, an equal share from every other genre
                assert len(negatives) == neg_target(len(positives))
                assert per_genre.max() - per_genre.min() <= 1 and len(per_genre) == len(p.classes) - 1
                assert (train["weight"] == 1.0).all()
            else:  # the weighted design: positives 30% of the weight, each other genre an equal part of 70%
                w = train.set_index("movie_id")["weight"]
                assert w[list(positives)].sum() / w.sum() == pytest.approx(0.3)
                by_genre = w.loc[negatives].groupby(genre_of.loc[negatives].to_numpy()).sum()
                assert by_genre.max() == pytest.approx(by_genre.min())
            negative_sets.append(set(negatives))
        assert len({frozenset(s) for s in negative_sets}) == BAGS  # different draws
        covered = set().union(*negative_sets)
        assert len(covered) > 1.5 * len(negative_sets[0])  # together the bags see more of the negatives
        again = bag_sets(p.labels, ova, genre, p.seed, balance, BAGS)
        for first, second in zip(sets, again, strict=True):
            assert_frame_equal(first, second)


def test_bag_count_is_checked(prepared):
    p = prepared["undersample"]
    with pytest.raises(ValueError, match="bags"):
        bag_sets(p.labels, p.ova["Drama"], "Drama", p.seed, "undersample", 0)


def test_members_train_without_label_smoothing():
    assert member_hp({"units": 64, "label_smoothing": 0.1}) == {"units": 64, "label_smoothing": 0.0}
    assert member_hp({"units": 64}) == {"units": 64}


def test_average_heads_is_one_self_contained_head_giving_the_mean():
    heads = [build_head(8, units=4, dropout=False, n_outputs=1, seed=k) for k in range(3)]
    x = np.random.default_rng(0).normal(size=(16, 8)).astype("float32")
    expected = np.mean([h.predict(x, verbose=0) for h in heads], axis=0)
    single = build_head(8, units=4, dropout=False, n_outputs=1, seed=9)
    assert average_heads([single]) is single
    member = average_heads(heads)
    assert member.name == "head"
    np.testing.assert_allclose(member.predict(x, verbose=0), expected, atol=1e-6)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "head.keras"
        member.save(path)
        np.testing.assert_allclose(keras.saving.load_model(path).predict(x, verbose=0), expected, atol=1e-6)


def test_a_bagged_member_trains_each_bag_with_its_own_seed_and_records_them(prepared):
    p = prepared["undersample"]
    genre = "Drama"
    ids = p.labels["movie_id"].to_numpy()
    rng = np.random.default_rng(0)
    is_genre = (p.labels["genre"].astype(str) == genre).to_numpy()
    x = (rng.normal(size=(len(ids), 6)) + 2.0 * is_genre[:, None]).astype("float32")
    split = p.labels["split"].astype(str).to_numpy()
    features = {s: (ids[split == s], x[split == s]) for s in ("train", "val", "test")}
    bags = bag_data(features, bag_sets(p.labels, p.ova[genre], genre, p.seed, "undersample", 2))
    kwargs = dict(units=4, dropout=False, max_epochs=2, batch_size=64, seed=3)
    head, summary = train_bagged_member(genre, bags, **kwargs)
    assert summary["bags"] == 2 and len(summary["bag_summaries"]) == 2 and "70/30" in summary["sets"]
    assert summary["bag_train_rows"] == [len(b.x_train) for b in bags]
    assert summary["hp"]["units"] == 4 and summary["genre"] == genre
    one, _ = train_bagged_member(genre, bags[:1], **kwargs)  # bag 0 alone: the report's member, seed 3
    two, _ = train_bagged_member(genre, bags[1:], **{**kwargs, "seed": 4})
    expected = (one.predict(bags[0].x_val, verbose=0) + two.predict(bags[0].x_val, verbose=0)) / 2
    np.testing.assert_allclose(head.predict(bags[0].x_val, verbose=0), expected, atol=1e-5)


def test_the_report_says_what_members_were_trained_on():
    from postergenre.steps.report import members_trained_on

    bagged = {"training": {"bags": 5, "sets": "bags of the report's 70/30 OvA sets", "hp": {"label_smoothing": 0.0}}}
    old = {"training": {"hp": {"label_smoothing": 0.1}}}  # a member trained before bags
    assert members_trained_on({"Drama": (bagged, {}), "War": (bagged, {})}) == {
        "bags": [5], "sets": "bags of the report's 70/30 OvA sets", "label_smoothing": [0.0]}
    mixed = members_trained_on({"Drama": (bagged, {}), "War": (old, {})})
    assert mixed["bags"] == [1, 5] and mixed["label_smoothing"] == [0.0, 0.1]


def test_the_report_scores_the_argmax_with_platt_and_with_the_joint_vector_scaling():
    from types import SimpleNamespace

    from postergenre.calibration import calibrate_matrix, fit_joint_members
    from postergenre.steps.report import ova_sections, probe_markdown

    rng = np.random.default_rng(4)
    classes = ["Drama", "War", "Western"]
    ids = np.arange(1, 601)
    y = rng.integers(0, 3, ids.size)
    logits = rng.normal(0, 1, (ids.size, 3)) + 2.0 * np.eye(3)[y] + np.array([2.0, 0.0, -1.0])
    scores = 1 / (1 + np.exp(-logits))
    val, test = ids[:300], ids[300:]
    ctx = SimpleNamespace(classes=classes, labels=pd.DataFrame({"movie_id": ids, "genre": np.array(classes)[y]}))
    members = {
        g: ({"metrics": {"calibration": {"a": 1.0, "b": 0.0}},
             "training": {"bags": 5, "sets": "bags of the report's 70/30 OvA sets", "hp": {"label_smoothing": 0.0}}},
            {"val_ids": val, "test_ids": test, "val": scores[:300, [j]], "test": scores[300:, [j]]})
        for j, g in enumerate(classes)
    }
    ova = ova_sections(ctx, members)["ova"]
    joint = fit_joint_members({g: (val, scores[:300, j], (y[:300] == j)) for j, g in enumerate(classes)})
    pred = calibrate_matrix(scores[300:], [joint[g] for g in classes]).argmax(1)
    from sklearn.metrics import f1_score

    assert ova["argmax_vector_scaling"]["macro_f1"] == pytest.approx(f1_score(y[300:], pred, average="macro"))
    assert ova["argmax_vector_scaling"]["macro_f1"] > ova["argmax"]["macro_f1"]  # the skew is taken out
    assert ova["members"]["bags"] == [5]
    text = probe_markdown({"ova": ova})
    assert "Vector scaling" in text and "Members: 5 head(s) each" in text

"""Multi-label scoring of the OvA ensemble: scores against sklearn, thresholds, the leak-free evaluation set."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

from postergenre.genres import GENRES
from postergenre.labels import prepare_labels
from postergenre.multilabel import (
    apply_thresholds,
    choose_thresholds,
    genre_indicators,
    multilabel_eval_set,
    multilabel_scores,
)

CLASSES = ["Drama", "War", "Western"]


def sklearn_scores(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    """The same figures from sklearn, with the zero_division this module promises (0)."""
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, zero_division=0)
    return {
        "micro_f1": f1_score(y_true, y_pred, average="micro", zero_division=0),
        "macro_f1": f1_score(y_true, y_pred, average="macro", zero_division=0),
        "subset_accuracy": accuracy_score(y_true, y_pred),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "support": support,
    }


def assert_matches_sklearn(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str]) -> dict:
    ours, ref = multilabel_scores(y_true, y_pred, classes), sklearn_scores(y_true, y_pred)
    for key in ("micro_f1", "macro_f1", "subset_accuracy"):
        assert ours[key] == pytest.approx(ref[key], abs=1e-12), key
    for j, genre in enumerate(classes):
        got = ours["per_class"][genre]
        assert [got["precision"], got["recall"], got["f1"]] == pytest.approx(
            [ref["precision"][j], ref["recall"][j], ref["f1"][j]], abs=1e-12
        )
        assert got["support"] == ref["support"][j]
    return ours


# ---- genre_indicators --------------------------------------------------------------------------------------


def test_genre_indicators_follow_the_class_order_and_drop_other_genres():
    genres = pd.Series(["Drama|War", "Western", "Comedy|Drama", "Comedy"])
    assert genre_indicators(genres, CLASSES).tolist() == [[1, 1, 0], [0, 0, 1], [1, 0, 0], [0, 0, 0]]
    assert genre_indicators(genres, ["Western", "Comedy"]).tolist() == [[0, 0], [1, 0], [0, 1], [0, 1]]
    with pytest.raises(ValueError, match="Cartoon"):
        genre_indicators(pd.Series(["Drama|Cartoon"]), CLASSES)
    with pytest.raises(ValueError, match="distinct genres"):
        genre_indicators(genres, ["Drama", "Drama"])


# ---- multilabel_scores -------------------------------------------------------------------------------------


def test_hand_made_scores_match_sklearn_and_the_arithmetic():
    y_true = np.array([[1, 1, 0], [1, 0, 0], [0, 1, 0], [1, 0, 0]])
    y_pred = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 0]])
    scores = assert_matches_sklearn(y_true, y_pred, CLASSES)
    # Drama: tp 2, fp 0, fn 1; War: tp 1, fp 1, fn 1; Western: nothing true, nothing predicted.
    assert scores["per_class"]["Drama"]["f1"] == pytest.approx(0.8)
    assert scores["per_class"]["War"]["f1"] == pytest.approx(0.5)
    assert scores["micro_f1"] == pytest.approx(2 * 3 / (2 * 3 + 1 + 2))
    assert scores["mean_labels_true"] == 1.25 and scores["mean_labels_pred"] == 1.0
    assert scores["subset_accuracy"] == 0.25 and scores["no_label_rate"] == 0.25 and scores["n"] == 4


def test_a_genre_with_no_true_and_no_predicted_label_scores_zero_and_counts_in_the_macro():
    y_true = np.array([[1, 0, 0], [0, 1, 0]])
    y_pred = y_true.copy()  # perfect on Drama and War; Western never occurs and is never predicted
    scores = assert_matches_sklearn(y_true, y_pred, CLASSES)
    assert scores["per_class"]["Western"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0,
                                              "predicted": 0}  # fmt: skip
    assert scores["macro_f1"] == pytest.approx(2 / 3) and scores["micro_f1"] == 1.0
    assert scores["subset_accuracy"] == 1.0


def test_no_prediction_at_all_scores_zero_not_nan():
    y_true = np.array([[1, 0, 1], [0, 1, 0]])
    scores = assert_matches_sklearn(y_true, np.zeros_like(y_true), CLASSES)
    assert scores["micro_f1"] == 0.0 and scores["micro_precision"] == 0.0 and scores["no_label_rate"] == 1.0


@pytest.mark.parametrize("seed", range(8))
def test_random_cases_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    n, k = int(rng.integers(1, 60)), int(rng.integers(2, 8))
    y_true = (rng.random((n, k)) < rng.uniform(0.05, 0.6)).astype(int)
    y_pred = (rng.random((n, k)) < rng.uniform(0.05, 0.6)).astype(int)
    y_true[:, 0] = y_pred[:, 0] = 0  # always one empty genre
    assert_matches_sklearn(y_true, y_pred, list(GENRES[:k]))


def test_scores_refuse_bad_input():
    with pytest.raises(ValueError, match="shape"):
        multilabel_scores(np.zeros((2, 3)), np.zeros((2, 2)), CLASSES)
    with pytest.raises(ValueError, match="only 0 and 1"):
        multilabel_scores(np.full((2, 3), 2), np.zeros((2, 3)), CLASSES)
    with pytest.raises(ValueError, match="no posters"):
        multilabel_scores(np.zeros((0, 3)), np.zeros((0, 3)), CLASSES)


# ---- choose_thresholds -------------------------------------------------------------------------------------


def f1_at(y: np.ndarray, s: np.ndarray, t: float) -> float:
    return f1_score(y, (s > t).astype(int), zero_division=0)


def test_thresholds_maximise_val_f1_per_genre_against_brute_force():
    rng = np.random.default_rng(0)
    y = (rng.random((80, 3)) < [0.5, 0.2, 0.05]).astype(int)
    scores = np.round(np.clip(y * 0.25 + rng.random((80, 3)) * 0.75, 0, 1), 2)  # rounded: ties on purpose
    thresholds = choose_thresholds(y, scores, CLASSES)
    for j, genre in enumerate(CLASSES):
        cuts = np.r_[np.unique(scores[:, j]), -1.0]
        best = max(f1_at(y[:, j], scores[:, j], t) for t in cuts)
        assert f1_at(y[:, j], scores[:, j], thresholds[genre]) == pytest.approx(best, abs=1e-12)
    predicted = apply_thresholds(scores, thresholds, CLASSES)
    assert predicted.tolist() == (scores > [thresholds[g] for g in CLASSES]).astype(int).tolist()


def test_thresholds_sit_between_scores_and_ties_go_to_the_higher_threshold():
    y = np.array([[1], [0], [1], [0]])
    # Top 1 (0.9): F1 2/3; top 3 (down to 0.5): tp 2, F1 0.8; top 4: F1 2/3. The cut lies halfway to 0.3.
    assert choose_thresholds(y, np.array([[0.9], [0.7], [0.5], [0.3]]), ["War"]) == {
        "War": pytest.approx(0.4)
    }
    tie = choose_thresholds(np.array([[1], [0], [0], [1]]), np.array([[0.8], [0.2], [0.2], [0.1]]), ["War"])
    # Predict none (F1 0), the top 1 (tp 1: F1 2/3), the top 3 (tp 1: 2/5) or all 4 (tp 2: 4/6): the two
    # 2/3 are equal floats, and the higher threshold (halfway between 0.8 and 0.2) wins.
    assert tie == {"War": pytest.approx(0.5)}


def test_a_genre_without_val_positives_predicts_nothing_val_scored():
    thresholds = choose_thresholds(np.zeros((3, 1)), np.array([[0.2], [0.9], [0.4]]), ["War"])
    assert thresholds == {"War": 0.9}
    assert apply_thresholds(np.array([[0.9], [0.91]]), thresholds, ["War"]).tolist() == [[0], [1]]


def test_thresholds_are_deterministic_and_refuse_bad_scores():
    rng = np.random.default_rng(1)
    y, s = (rng.random((50, 2)) < 0.3).astype(int), rng.random((50, 2))
    assert choose_thresholds(y, s, CLASSES[:2]) == choose_thresholds(y.copy(), s.copy(), CLASSES[:2])
    with pytest.raises(ValueError, match="finite"):
        choose_thresholds(y, np.full((50, 2), np.nan), CLASSES[:2])
    with pytest.raises(ValueError, match="missing"):
        apply_thresholds(s, {"Drama": 0.5}, CLASSES[:2])


# ---- multilabel_eval_set -----------------------------------------------------------------------------------


def skewed_rows(movies: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    weights = 1 / np.arange(1, len(GENRES) + 1)
    picked = [
        (i, g)
        for i in range(movies)
        for g in set(rng.choice(GENRES, rng.integers(1, 4), p=weights / weights.sum()))
    ]
    return pd.DataFrame(picked, columns=["movie_id", "genre"])


@pytest.fixture(scope="module", params=["undersample", "weighted"])
def prepared(request):
    return prepare_labels(skewed_rows(3000, seed=4), seed=1, balance=request.param)


def test_the_eval_set_never_holds_a_train_or_val_movie(prepared):
    evaluation = multilabel_eval_set(prepared.movies, prepared.labels, prepared.classes)
    split_of = prepared.labels.set_index("movie_id")["split"].astype(str)
    seen = set(split_of[split_of != "test"].index)
    assert not seen & set(evaluation.test["movie_id"])
    test_split = set(split_of[split_of == "test"].index)
    in_test = set(evaluation.test.loc[evaluation.test["source"] == "test", "movie_id"])
    assert in_test == test_split
    unused = set(evaluation.test.loc[evaluation.test["source"] == "unused", "movie_id"])
    assert unused == set(prepared.movies["movie_id"]) - set(split_of.index)
    if prepared.balance == "weighted":
        assert not unused  # the movies undersampling dropped are all in train
    else:
        assert len(unused) == len(prepared.movies) - len(prepared.labels) > 0
    assert set(evaluation.val["movie_id"]) == set(split_of[split_of == "val"].index)
    assert (
        evaluation.test["movie_id"].is_monotonic_increasing
        and evaluation.val["movie_id"].is_monotonic_increasing
    )


def test_the_eval_set_carries_the_full_genre_lists_restricted_to_the_classes(prepared):
    evaluation = multilabel_eval_set(prepared.movies, prepared.labels, prepared.classes)
    full = prepared.movies.set_index("movie_id")["genres"].astype(str)
    for frame, y in ((evaluation.test, evaluation.y_test), (evaluation.val, evaluation.y_val)):
        assert y.shape == (len(frame), len(prepared.classes))
        assert (frame["genres"].to_numpy() == full[frame["movie_id"]].to_numpy()).all()  # all 19 are classes
        column = {g: j for j, g in enumerate(prepared.classes)}
        assert (y[np.arange(len(frame)), frame["genre"].map(column).to_numpy()] == 1).all()
    assert evaluation.y_test.sum(axis=1).mean() > 1  # multi-genre movies keep every genre
    two = multilabel_eval_set(prepared.movies, prepared.labels, ["Drama", "Western"])
    assert set(two.test["genres"]) <= {"Drama", "Western", "Drama|Western"}
    assert two.y_test.sum(axis=1).min() == 1  # movies with neither genre are left out


def test_the_eval_set_refuses_labels_of_unknown_movies(prepared):
    stranger = pd.DataFrame({"movie_id": [10**9], "split": ["test"]})
    with pytest.raises(ValueError, match="not in movies"):
        multilabel_eval_set(prepared.movies, pd.concat([prepared.labels, stranger]), prepared.classes)

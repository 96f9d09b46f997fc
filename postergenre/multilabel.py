"""The OvA ensemble as the multi-label classifier it is: honest evaluation movies, scores and thresholds.

Pure functions on 0/1 indicator matrices (rows = posters, columns = genres in ``classes`` order):

- ``multilabel_eval_set``: which movies may score a dataset's models, with their true genre lists;
- ``multilabel_scores``: micro/macro F1, per-genre precision/recall/F1, labels per poster, subset accuracy;
- ``choose_thresholds`` / ``apply_thresholds``: per-genre sigmoid thresholds tuned on val.

Zero-division convention (sklearn's ``zero_division=0``): a ratio whose denominator is 0 is 0. So a genre
with no true and no predicted label in the scored set gets precision, recall and F1 of 0, and still counts
in the macro averages: a macro-F1 is never raised by genres the set cannot test.

Thresholds follow ``evaluation.ova_ensemble_metrics`` and Keras: a genre is predicted when its score is
strictly greater than its threshold.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from postergenre.genres import GENRES
from postergenre.label_arrays import genre_masks, mask_names


def _class_bits(classes: Sequence[str]) -> np.ndarray:
    unknown = [c for c in classes if c not in GENRES]
    if unknown or len(set(classes)) != len(classes):
        raise ValueError(f"classes must be distinct genres, got {list(classes)}")
    return np.array([GENRES.index(c) for c in classes], dtype=np.int32)


def genre_indicators(genres: pd.Series, classes: Sequence[str]) -> np.ndarray:
    """(movies, classes) int8 0/1 matrix of '|'-joined genre lists, columns in ``classes`` order.

    Genres outside ``classes`` are ignored: each row is the movie's list restricted to the classes.
    """
    bits = _class_bits(classes)
    return ((genre_masks(genres)[:, None] >> bits[None, :]) & 1).astype(np.int8)


@dataclass
class MultilabelEval:
    """Movies for scoring a dataset's models as multi-label classifiers (``multilabel_eval_set``).

    ``test``: movie_id, genre (collapsed), genres (true list restricted to ``classes``), source ("test":
    in the test split; "unused": in no split); ``val``: movie_id, genre, genres of the val split, for
    ``choose_thresholds``. ``y_test`` / ``y_val``: their genres as indicator matrices over ``classes``.
    """

    test: pd.DataFrame
    val: pd.DataFrame
    classes: list[str]
    y_test: np.ndarray
    y_val: np.ndarray


def multilabel_eval_set(movies: pd.DataFrame, labels: pd.DataFrame, classes: Sequence[str]) -> MultilabelEval:
    """The movies that may score a dataset's models on their full genre lists, without a leak.

    ``movies``: every labelled movie of the snapshot (movie_id, genre, genres: ``labels.movie_genres``);
    ``labels``: the dataset's splits (movie_id, split). The test set is every movie in neither the train
    nor the val split: the test split plus the movies the dataset left out of all splits. With
    ``undersample`` those are the movies undersampling dropped (they never reach a model: the OvA sets are
    drawn from the splits); with ``weighted`` dropped movies are in train, so nothing else qualifies and
    the set is the test split alone. Compare models trained on different balances on ``source == "test"``,
    the part both share. True genre lists are restricted to ``classes``; a movie left with none (it cannot
    happen for a prepared dataset: a movie's collapsed genre is always a class) is left out. Both frames
    are sorted by movie_id.
    """
    movies = movies.sort_values("movie_id", kind="stable", ignore_index=True)
    ids = movies["movie_id"].to_numpy(dtype=np.int64)
    split_of = pd.Series(labels["split"].astype(str).to_numpy(), index=labels["movie_id"].to_numpy(np.int64))
    if not split_of.index.isin(ids).all():
        raise ValueError("labels hold movies that are not in movies")
    split = split_of.reindex(ids).to_numpy(dtype=object)
    masks = genre_masks(movies["genres"]) & np.bitwise_or.reduce(1 << _class_bits(classes), initial=0)
    in_test = split == "test"

    def part(rows: np.ndarray, **extra: Any) -> pd.DataFrame:
        rows = rows & (masks != 0)
        frame = pd.DataFrame(
            {
                "movie_id": ids[rows],
                "genre": movies["genre"].astype(str).to_numpy()[rows],
                "genres": np.asarray(mask_names(masks[rows]), dtype=object),
            }
        )
        return frame.assign(**{k: v[rows] for k, v in extra.items()})

    source = pd.Categorical(np.where(in_test, "test", "unused"), categories=["test", "unused"])
    test = part(in_test | pd.isna(split), source=source)
    val = part(split == "val")
    return MultilabelEval(
        test=test,
        val=val,
        classes=list(classes),
        y_test=genre_indicators(test["genres"], classes),
        y_val=genre_indicators(val["genres"], classes),
    )


def _indicators(values: Any, name: str, classes: Sequence[str]) -> np.ndarray:
    matrix = np.asarray(values)
    if matrix.ndim != 2 or matrix.shape[1] != len(classes):
        raise ValueError(f"{name} must have shape (posters, {len(classes)}), got {matrix.shape}")
    if not np.isin(matrix, (0, 1)).all():
        raise ValueError(f"{name} must hold only 0 and 1")
    return matrix.astype(bool)


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, 0 where the denominator is 0 (sklearn's zero_division=0)."""
    numerator, denominator = np.asarray(numerator, dtype=np.float64), np.asarray(denominator, np.float64)
    return np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0)


def multilabel_scores(y_true: Any, y_pred: Any, classes: Sequence[str]) -> dict[str, Any]:
    """Multi-label scores of predicted against true indicator matrices (posters x ``classes``).

    Micro = pooled over every (poster, genre) cell; macro = unweighted mean over genres of the per-genre
    values (sklearn's ``average="micro"`` / ``"macro"``, ``zero_division=0``). ``subset_accuracy``: share
    of posters whose whole predicted list is exactly right; ``mean_labels_true`` / ``mean_labels_pred``:
    genres per poster; ``no_label_rate``: share of posters given no genre; per-genre ``support`` = true
    labels, ``predicted`` = predicted labels.
    """
    truth, pred = _indicators(y_true, "y_true", classes), _indicators(y_pred, "y_pred", classes)
    if truth.shape != pred.shape:
        raise ValueError(f"y_true and y_pred differ in shape: {truth.shape} vs {pred.shape}")
    if not truth.shape[0]:
        raise ValueError("no posters to score")
    tp, n_pred, n_true = (truth & pred).sum(axis=0), pred.sum(axis=0), truth.sum(axis=0)
    precision, recall, f1 = _ratio(tp, n_pred), _ratio(tp, n_true), _ratio(2 * tp, n_pred + n_true)
    return {
        "n": int(truth.shape[0]),
        "micro_precision": float(_ratio(tp.sum(), n_pred.sum())),
        "micro_recall": float(_ratio(tp.sum(), n_true.sum())),
        "micro_f1": float(_ratio(2 * tp.sum(), n_pred.sum() + n_true.sum())),
        "macro_precision": float(precision.mean()),
        "macro_recall": float(recall.mean()),
        "macro_f1": float(f1.mean()),
        "subset_accuracy": float(np.mean((truth == pred).all(axis=1))),
        "mean_labels_true": float(truth.sum(axis=1).mean()),
        "mean_labels_pred": float(pred.sum(axis=1).mean()),
        "no_label_rate": float(np.mean(~pred.any(axis=1))),
        "per_class": {
            genre: {
                "precision": float(precision[j]),
                "recall": float(recall[j]),
                "f1": float(f1[j]),
                "support": int(n_true[j]),
                "predicted": int(n_pred[j]),
            }
            for j, genre in enumerate(classes)
        },
    }


def _best_threshold(is_true: np.ndarray, scores: np.ndarray) -> float:
    """The threshold t maximising the F1 of ``scores > t``; ties go to the highest t.

    Candidates: the maximum score (predict nothing), then one cut below each distinct score, halfway to
    the next lower one (below the lowest: half of it, or 1 under it if it is not positive), so the
    choice does not hinge on a validation score sitting exactly on the threshold. Equal F1 values are
    equal floats (each is a correctly rounded ratio of integers), so ties are exact and the highest
    threshold wins deterministically. With no true label every F1 is 0 and the answer is the maximum
    score: predict nothing that val scored.
    """
    order = np.argsort(-scores, kind="stable")
    s_sorted = scores[order]
    ends = np.flatnonzero(np.r_[s_sorted[1:] != s_sorted[:-1], True])  # last row of each run of ties
    upper = s_sorted[ends]  # distinct scores, descending
    lowest = upper[-1] / 2 if upper[-1] > 0 else upper[-1] - 1.0
    lower = np.r_[upper[1:], lowest]
    mid = (upper + lower) / 2
    cuts = np.where(mid < upper, mid, lower)  # adjacent floats: the midpoint may round up to ``upper``
    candidates = np.r_[upper[0], cuts]
    tp = np.r_[0, np.cumsum(is_true[order])[ends]]
    n_pred = np.r_[0, ends + 1]
    f1 = _ratio(2 * tp, n_pred + is_true.sum())
    return float(candidates[int(np.argmax(f1))])  # argmax: the first, i.e. highest, of equal maxima


def choose_thresholds(y_val: Any, scores_val: Any, classes: Sequence[str]) -> dict[str, float]:
    """Per genre, the threshold on val scores that maximises that genre's val F1 (``_best_threshold``).

    ``y_val``: true indicator matrix (posters x ``classes``), e.g. ``MultilabelEval.y_val``; ``scores_val``:
    the OvA members' sigmoid outputs, same shape. Deterministic: the same inputs give the same thresholds.
    """
    truth = _indicators(y_val, "y_val", classes)
    scores = np.asarray(scores_val, dtype=np.float64)
    if scores.shape != truth.shape or not np.isfinite(scores).all():
        raise ValueError(f"scores_val must be finite with shape {truth.shape}, got {scores.shape}")
    if not truth.shape[0]:
        raise ValueError("no val posters to choose thresholds on")
    return {genre: _best_threshold(truth[:, j], scores[:, j]) for j, genre in enumerate(classes)}


def apply_thresholds(scores: Any, thresholds: Mapping[str, float], classes: Sequence[str]) -> np.ndarray:
    """int8 indicator matrix: genre j predicted where ``scores[:, j] > thresholds[classes[j]]``."""
    matrix = np.asarray(scores, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[1] != len(classes):
        raise ValueError(f"scores must have shape (posters, {len(classes)}), got {matrix.shape}")
    missing = [g for g in classes if g not in thresholds]
    if missing:
        raise ValueError(f"thresholds missing for {', '.join(missing)}")
    return (matrix > np.array([float(thresholds[g]) for g in classes])).astype(np.int8)

"""Label processing from the method report (sections 1.1 and 3.1) as pure, vectorised functions.

Steps: collapse each movie to its least common genre, undersample every genre to the smallest one,
split 70/15/15 per genre, one-hot encode, and build the 70/30 one-vs-all (OvA) sets.

Two ways to balance (``BALANCES``), with the same undersampled val and test splits row for row:
``undersample`` (the report's; every row weighs 1) and ``weighted``, where every movie undersampling
dropped joins train with class weights (``class_weights``) and the OvA train sets take all positives with
weighted negatives (``weighted_ova_train``).

Each movie's full genre list is kept next to its collapsed genre (``movie_genres``), so the OvA ensemble
can be scored as the multi-label classifier it is (``multilabel``). Snapshots too small to give every
class a movie in every split are refused (``check_minimums``).

Everything runs on small integer codes with numpy instead of per-group Python (``label_arrays``: the
codes and the per-group random draws), so a letterboxd-sized snapshot (~1M rows) takes a fraction of a
second. Randomness comes from ``numpy.random.default_rng([seed, stage])``: each stage has its own
stream, so changing one never shifts the draws of another. Results depend only on the *set* of input
rows and the seed, never on the row order: frames are put in ``movie_id`` order before anything random
happens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pandas as pd

from postergenre import label_arrays as arrays
from postergenre.genres import GENRES
from postergenre.label_arrays import (
    GENRE_DTYPE,
    SPLIT_DTYPE,
    SPLITS,
    by_movie,
    frame_of,
    genre_codes,
    mask_names,
    split_codes,
    spread,
)

FRACTIONS: tuple[float, float, float] = (0.7, 0.15, 0.15)
BALANCES: tuple[str, ...] = ("undersample", "weighted")

MIN_CLASSES = 2
"""Genres a dataset needs: a classifier with one class learns nothing."""
MIN_PER_SPLIT = 1
"""Movies each class needs in each split: an empty val split leaves training without its stopping rule."""

_N = len(GENRES)
# Stream ids for default_rng([seed, stream]).
_BALANCE, _SPLIT, _OVA, _OVA_WEIGHTED = 1, 2, 3, 4


@dataclass
class PreparedLabels:
    """Everything the training steps need from a snapshot's labels.

    ``labels``: movie_id, genre, split, weight (one row per kept movie, sorted by movie_id).
    ``ova``: genre -> frame of movie_id, label (1 = that genre), split, weight; see ``ova_sets``.
    ``movies``: movie_id, genre (collapsed), genres (full '|'-joined list) of every labelled movie.
    ``classes``: the genres present, in ``GENRES`` order (the one-hot column order).
    ``counts``: split -> genre -> number of movies in ``labels``.
    ``balance``: one of ``BALANCES``; with ``undersample`` every weight is 1.
    """

    labels: pd.DataFrame
    ova: dict[str, pd.DataFrame]
    classes: list[str]
    counts: dict[str, dict[str, int]]
    seed: int
    movies: pd.DataFrame
    balance: str = "undersample"


def check_balance(balance: str) -> str:
    """``balance`` if it is one of ``BALANCES``, else ValueError."""
    if balance not in BALANCES:
        raise ValueError(f"unknown balance {balance!r}: use one of {', '.join(BALANCES)}")
    return balance


# ---- genres per movie ------------------------------------------------------------------------------------


def genre_movie_counts(rows: pd.DataFrame) -> pd.Series:
    """Number of movies carrying each genre (all 19, zeros included), indexed by genre in GENRES order.

    ``rows`` holds one (movie_id, genre) pair per row, deduplicated by ingest, so a row count per genre
    is a movie count.
    """
    counts = np.bincount(genre_codes(rows), minlength=_N)
    return pd.Series(counts, index=pd.Index(list(GENRES), name="genre"), name="movies")


def _rarity_rank(counts: np.ndarray) -> np.ndarray:
    """rank[genre code]: 0 for the least common genre; ties go to the alphabetically first genre."""
    order = np.lexsort((np.arange(counts.size), counts))
    rank = np.empty(counts.size, dtype=np.int8)
    rank[order] = np.arange(counts.size)
    return rank


class _MovieRows(NamedTuple):
    """(movie_id, genre code) rows in movie_id order; movie k's rows start at ``starts[k]``."""

    ids: np.ndarray
    codes: np.ndarray
    starts: np.ndarray


def _movie_rows(ids: np.ndarray, codes: np.ndarray) -> _MovieRows:
    if not (ids[1:] >= ids[:-1]).all():  # sort only if needed: exports come grouped by movie
        order = np.argsort(ids, kind="stable")
        ids, codes = ids[order], codes[order]
    first = np.ones(ids.size, dtype=bool)
    first[1:] = ids[1:] != ids[:-1]
    return _MovieRows(ids, codes, np.flatnonzero(first))


def _least_common(rows: _MovieRows) -> np.ndarray:
    """Each movie's genre code of lowest rarity rank: a segmented minimum over its rows."""
    if not rows.starts.size:
        return np.zeros(0, dtype=np.int8)
    rarity = _rarity_rank(np.bincount(rows.codes, minlength=_N))
    rank = np.take(rarity, rows.codes)  # np.take: a small-table lookup, much faster than rarity[codes]
    return np.take(np.argsort(rarity), np.minimum.reduceat(rank, rows.starts)).astype(np.int8)


def least_common_genres(movie_ids: np.ndarray, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(movie ids ascending, each movie's least common genre code) from (movie_id, genre code) rows.

    Least common = carried by the fewest rows (movies, for deduplicated rows); ties go to the genre that
    comes first in ``GENRES`` (alphabetical). The one rule ``collapse`` and the synthetic snapshots share.
    """
    rows = _movie_rows(np.asarray(movie_ids, dtype=np.int64), np.asarray(codes))
    return rows.ids[rows.starts], _least_common(rows)


def collapse(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per movie (sorted by movie_id) with its least common genre in this snapshot.

    Least common = fewest movies carrying it (``genre_movie_counts``); ties are broken by genre name,
    alphabetical first (``GENRES`` order). ``rows`` must be deduplicated (ingest does it): a repeated
    (movie_id, genre) pair would count twice. Rows are sorted by movie_id only if they are not already,
    then the rarest genre of each movie is a segmented minimum of the genres' rarity ranks.
    """
    ids, rarest = least_common_genres(rows["movie_id"].to_numpy(dtype=np.int64), genre_codes(rows))
    return frame_of(movie_id=ids, genre=pd.Categorical.from_codes(rarest, dtype=GENRE_DTYPE))


def movie_genres(rows: pd.DataFrame) -> pd.DataFrame:
    """Per movie (sorted by movie_id): its collapsed ``genre`` (as ``collapse``) and all its ``genres``.

    ``genres`` is the movie's validated genre list as one string of canonical names joined by '|' in
    ``GENRES`` order (``Drama|War``); ``multilabel.genre_indicators`` reads it back. Unknown genre names
    raise ValueError, as everywhere in this module.
    """
    movies = _movie_rows(rows["movie_id"].to_numpy(dtype=np.int64), genre_codes(rows))
    bits = np.left_shift(np.int32(1), movies.codes.astype(np.int32))
    masks = np.bitwise_or.reduceat(bits, movies.starts) if movies.starts.size else bits
    return frame_of(
        movie_id=movies.ids[movies.starts],
        genre=pd.Categorical.from_codes(_least_common(movies), dtype=GENRE_DTYPE),
        genres=mask_names(masks),
    )


# ---- undersampling and splits ----------------------------------------------------------------------------


def undersample(collapsed: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Undersample every genre to the size of the smallest one (uniformly, seeded); sorted by movie_id.

    Genres with no movie at all are ignored: they neither set the minimum nor appear in the output (the
    report's snapshot had all 19; a small or filtered snapshot may not).
    """
    frame = by_movie(collapsed)
    codes = genre_codes(frame)
    blocks = arrays.blocks(codes, _N)
    smallest = blocks.sizes[blocks.sizes > 0].min() if blocks.sizes.any() else 0
    rng = np.random.default_rng([seed, _BALANCE])
    keep = np.sort(arrays.draw(blocks, np.minimum(blocks.sizes, smallest), rng))
    return frame_of(
        movie_id=frame["movie_id"].to_numpy(dtype=np.int64)[keep],
        genre=pd.Categorical.from_codes(codes[keep], dtype=GENRE_DTYPE),
    )


def split_sizes(n: np.ndarray, fractions: Sequence[float] = FRACTIONS) -> np.ndarray:
    """Per-class (train, val, test) sizes: round(f_train*n), round(f_val*n), the rest to test.

    ``round`` is numpy's (half to even, like Python's). For tiny classes the val size is clipped so that
    train + val never exceeds n.
    """
    n = np.asarray(n, dtype=np.int64)
    n_train = np.round(fractions[0] * n).astype(np.int64)
    n_val = np.minimum(np.round(fractions[1] * n).astype(np.int64), n - n_train)
    return np.stack([n_train, n_val, n - n_train - n_val], axis=-1)


def stratified_split(
    balanced: pd.DataFrame, seed: int, fractions: Sequence[float] = FRACTIONS
) -> pd.DataFrame:
    """Add a ``split`` column (train/val/test) with exact per-genre proportions; sorted by movie_id.

    Each genre's movies are put in a random (seeded) order and cut at ``split_sizes``, so every split
    holds the same share of every genre.
    """
    if len(fractions) != 3 or min(fractions) < 0 or not np.isclose(sum(fractions), 1.0):
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {fractions}")
    frame = by_movie(balanced)
    codes = genre_codes(frame)
    blocks = arrays.blocks(codes, _N)
    sizes = split_sizes(blocks.sizes, fractions)
    # Cut each genre's shuffled rows: the first n_train are train, the next n_val val, the rest test.
    shuffled = arrays.shuffled(blocks, np.random.default_rng([seed, _SPLIT]))
    split = np.full(codes.size, 2, dtype=np.int8)
    split[arrays.windows(shuffled, blocks, sizes[:, 0], np.zeros_like(sizes[:, 0]))] = 0
    split[arrays.windows(shuffled, blocks, sizes[:, 1], sizes[:, 0])] = 1
    return frame_of(
        movie_id=frame["movie_id"].to_numpy(dtype=np.int64),
        genre=pd.Categorical.from_codes(codes, dtype=GENRE_DTYPE),
        split=pd.Categorical.from_codes(split, dtype=SPLIT_DTYPE),
    )


def min_movies_per_class(min_per_split: int = MIN_PER_SPLIT, fractions: Sequence[float] = FRACTIONS) -> int:
    """The smallest class size from which on every size gets >= ``min_per_split`` movies in each split.

    6 for 70/15/15 and one per split (a class of 5 splits 4/1/0). Split sizes are within 1.5 of ``f * n``, so sizes
    past ``(min_per_split + 2) / min(fractions)`` always pass and the search stops there."""
    if min_per_split < 1 or min(fractions) <= 0:
        raise ValueError("min_per_split must be >= 1 and every split fraction > 0")
    sizes = split_sizes(np.arange(int(np.ceil((min_per_split + 2) / min(fractions))) + 2), fractions)
    return int(np.flatnonzero((sizes < min_per_split).any(axis=1))[-1]) + 1


MIN_MOVIES_PER_CLASS = min_movies_per_class()
"""6: movies each genre needs after collapsing (undersampling cuts every class to the rarest one)."""


def check_minimums(collapsed: pd.DataFrame, min_per_split: int = MIN_PER_SPLIT) -> None:
    """Refuse (ValueError) a collapsed snapshot too small to give every class a movie in every split.

    Needs at least ``MIN_CLASSES`` genres with movies, and every such genre at least
    ``min_movies_per_class(min_per_split)`` movies after collapsing: undersampling cuts every class to the
    rarest one, so one short genre would starve every class. The message names each short genre and by
    how much it is short.
    """
    counts = np.bincount(genre_codes(collapsed), minlength=_N)
    present = np.flatnonzero(counts).tolist()
    if len(present) < MIN_CLASSES:
        found = ", ".join(f"{GENRES[g]} ({counts[g]} movies)" for g in present) or "no labelled movie"
        raise ValueError(f"too few genres to train on: need movies of at least {MIN_CLASSES}, found {found}")
    need = min_movies_per_class(min_per_split)
    short = sorted((g for g in present if counts[g] < need), key=lambda g: (counts[g], g))
    if short:
        listed = ", ".join(f"{GENRES[g]} has {counts[g]} ({need - counts[g]} short)" for g in short)
        raise ValueError(
            f"too few movies per genre: each genre needs at least {need} once every movie is collapsed to its "
            f"least common genre, so that train, val and test each get {min_per_split}; {listed}"
        )


def one_hot(genres: pd.Series, classes: Sequence[str]) -> np.ndarray:
    """One-hot rows (int, 0/1) with columns in exactly the order of ``classes``.

    Uses sklearn's ``LabelBinarizer`` as the report does; it sorts its classes and collapses two classes
    into a single column, so both are undone here. Labels outside ``classes`` raise ValueError rather
    than silently becoming all-zero rows.
    """
    from sklearn.preprocessing import LabelBinarizer  # seconds to import; only this function needs it

    classes = list(classes)
    if len(classes) < 2 or len(set(classes)) != len(classes):
        raise ValueError("classes must hold at least two distinct names")
    values = np.asarray(genres, dtype=object)
    unknown = set(pd.unique(values)) - set(classes)
    if unknown:
        raise ValueError(f"labels not in classes: {', '.join(sorted(map(str, unknown)))}")
    binarizer = LabelBinarizer().fit(classes)
    encoded = binarizer.transform(values)
    if len(classes) == 2:
        encoded = np.hstack([1 - encoded, encoded])
    column = {c: i for i, c in enumerate(binarizer.classes_)}
    return encoded[:, [column[c] for c in classes]]


# ---- one-vs-all sets -------------------------------------------------------------------------------------


class _OvaDraw(NamedTuple):
    """Rows in (split, movie_id) order and, per genre code, the sorted row indices of its OvA set."""

    ids: np.ndarray
    codes: np.ndarray
    splits: np.ndarray
    picks: dict[int, np.ndarray]


def _draw_ova(labels: pd.DataFrame, rng: np.random.Generator, negative_ratio: float) -> _OvaDraw:
    if not 0 <= negative_ratio < 1:
        raise ValueError(f"negative_ratio must be in [0, 1), got {negative_ratio}")
    frame = by_movie(labels)
    frame = frame.iloc[np.argsort(split_codes(frame), kind="stable")]  # (split, movie_id): the output order
    ids, codes, splits = frame["movie_id"].to_numpy(dtype=np.int64), genre_codes(frame), split_codes(frame)
    blocks = arrays.blocks(splits.astype(np.int16) * _N + codes, len(SPLITS) * _N)
    shuffled = arrays.shuffled(blocks, rng)
    available = blocks.sizes.reshape(len(SPLITS), _N)
    picks = {}
    for genre in np.flatnonzero(available.sum(axis=0)).tolist():
        quota = np.zeros_like(available)
        for s, row in enumerate(available.tolist()):
            positives, row[genre] = row[genre], 0
            quota[s] = spread(round(positives * negative_ratio / (1 - negative_ratio)), row)
        quota = quota.ravel()
        offsets = rng.integers(0, blocks.sizes - quota + 1)
        negatives = arrays.windows(shuffled, blocks, quota, offsets)
        chosen = codes == genre
        chosen[negatives] = True
        picks[genre] = np.flatnonzero(chosen)
    return _OvaDraw(ids, codes, splits, picks)


def _ova_frame(draw: _OvaDraw, genre: int, **extra: np.ndarray) -> pd.DataFrame:
    keep = draw.picks[genre]
    return frame_of(
        movie_id=draw.ids[keep],
        label=(draw.codes[keep] == genre).astype(np.int8),
        split=pd.Categorical.from_codes(draw.splits[keep], dtype=SPLIT_DTYPE),
        **extra,
    )


def ova_sets(
    labels: pd.DataFrame, seed: int, negative_ratio: float = 0.7, *, draw: int = 0
) -> dict[str, pd.DataFrame]:
    """Per genre, a binary set (movie_id, label, split) sorted by (split in SPLITS order, movie_id).

    Built split by split from that split's movies only, so no movie crosses splits: all of the split's
    positives (movies of the genre) plus ``round(n_pos * r / (1 - r))`` negatives (r = 0.7 gives the
    report's 70/30), drawn uniformly at random within each of the other genres with an equal quota per
    genre (``spread``: a genre that runs short gives all it has and the rest is spread evenly). If the
    split has too few negatives, all of them are taken and the set holds less than r negatives. Only
    genres present in ``labels`` get a set.

    Sampling: every (split, genre) group is shuffled once; each OvA set reads its negatives from a group
    as a window of that shuffle at its own random offset. A window of a uniform shuffle is a uniform
    random subset, so each set is sampled exactly as if alone; sets of different genres are merely not
    independent of each other, which no binary classifier can see. It keeps 19 sets at ~1ms each.

    ``draw`` > 0 gives another draw of the same design on its own stream (``members``' bags); 0 is the dataset's.
    """
    picked = _draw_ova(labels, _ova_rng(seed, _OVA, draw), negative_ratio)
    return {GENRES[genre]: _ova_frame(picked, genre) for genre in picked.picks}


def _ova_rng(seed: int, stream: int, draw: int) -> np.random.Generator:
    return np.random.default_rng([seed, stream] if draw == 0 else [seed, stream, draw])


# ---- the weighted balance --------------------------------------------------------------------------------


def with_dropped_in_train(split_labels: pd.DataFrame, collapsed: pd.DataFrame) -> pd.DataFrame:
    """Every movie of ``collapsed`` (movie_id, genre, split; sorted by movie_id): the movies of
    ``split_labels`` keep their split, all others (those undersampling dropped) go to train."""
    frame, kept = by_movie(collapsed), by_movie(split_labels)
    ids, kept_ids = frame["movie_id"].to_numpy(np.int64), kept["movie_id"].to_numpy(np.int64)
    codes = genre_codes(frame)
    at = np.minimum(np.searchsorted(ids, kept_ids), max(ids.size - 1, 0))
    if ids.size == 0 or (ids[at] != kept_ids).any() or (codes[at] != genre_codes(kept)).any():
        raise ValueError("split_labels must be movies of collapsed, with the same genres")
    split = np.zeros(ids.size, dtype=np.int8)
    split[at] = split_codes(kept)
    return frame_of(
        movie_id=ids,
        genre=pd.Categorical.from_codes(codes, dtype=GENRE_DTYPE),
        split=pd.Categorical.from_codes(split, dtype=SPLIT_DTYPE),
    )


def class_weights(labels: pd.DataFrame) -> np.ndarray:
    """Per-row loss weights (float64) for a labels frame (genre, split).

    Train rows: each genre's rows add up to the same total, n_train / n_classes, i.e. sklearn's "balanced"
    class weight n_train / (n_classes * n_genre); the mean train weight is 1 and an already balanced
    train split gets exactly 1 everywhere. Val and test rows weigh 1 (they are balanced by construction).
    """
    codes, train = genre_codes(labels), split_codes(labels) == 0
    weights = np.ones(codes.size)
    weights[train] = arrays.group_weights(codes[train], np.ones(_N))
    return weights


def weighted_ova_train(
    labels: pd.DataFrame, seed: int, negative_ratio: float = 0.7, *, draw: int = 0
) -> dict[str, pd.DataFrame]:
    """Per genre, the ``weighted`` OvA train set (movie_id, label, split, weight), sorted by movie_id.

    Drawn from the train split of ``labels`` exactly as ``ova_sets`` draws (every positive, an equal
    quota of ``round(n_pos * r / (1 - r))`` negatives per other genre, all of a genre that runs short),
    on its own random stream. Weights then restore the design in the loss: positives carry a share 1 - r
    of the total weight, each negative genre present an equal part of r (so a short negative genre is
    weighted up); the mean weight is 1. ``draw`` as in ``ova_sets``.
    """
    train = labels[split_codes(labels) == 0]
    picked = _draw_ova(train, _ova_rng(seed, _OVA_WEIGHTED, draw), negative_ratio)
    sets = {}
    for genre, keep in picked.picks.items():
        codes = picked.codes[keep]
        groups = np.where(codes == genre, _N, codes)  # positives form group _N, negatives one group per genre
        negative_genres = np.unique(codes[codes != genre]).size
        shares = np.full(_N + 1, negative_ratio / max(negative_genres, 1))
        shares[_N] = 1 - negative_ratio
        sets[GENRES[genre]] = _ova_frame(picked, genre, weight=arrays.group_weights(groups, shares))
    return sets


def weighted_ova_sets(
    labels: pd.DataFrame, balanced_sets: dict[str, pd.DataFrame], seed: int, negative_ratio: float = 0.7
) -> dict[str, pd.DataFrame]:
    """The OvA sets of a ``weighted`` dataset: train rows from ``weighted_ova_train(labels)``, then the val
    and test rows of ``balanced_sets`` (the undersampled dataset's ``ova_sets``) unchanged, weighing 1."""
    train = weighted_ova_train(labels, seed, negative_ratio)
    held_out = {g: frame[frame["split"] != "train"].assign(weight=1.0) for g, frame in balanced_sets.items()}
    return {
        g: pd.concat([train[g], frame], ignore_index=True) if g in train else frame
        for g, frame in held_out.items()
    }


# ---- the whole pipeline ----------------------------------------------------------------------------------


def _split_counts(labels: pd.DataFrame, classes: list[str]) -> dict[str, dict[str, int]]:
    groups = split_codes(labels).astype(np.int16) * _N + genre_codes(labels)
    table = np.bincount(groups, minlength=len(SPLITS) * _N).reshape(len(SPLITS), _N)
    return {s: {g: int(table[i, GENRES.index(g)]) for g in classes} for i, s in enumerate(SPLITS)}


def prepare_labels(
    rows: pd.DataFrame, seed: int, balance: str = "undersample", *, min_per_split: int = MIN_PER_SPLIT
) -> PreparedLabels:
    """The report's whole label pipeline: collapse -> undersample -> stratified split -> OvA sets.

    ``balance="weighted"`` then puts the movies undersampling dropped into train with class weights and
    redraws the OvA train sets with weights (module docstring); val and test stay the undersampled ones.
    Snapshots below the minimums (``check_minimums``) raise ValueError.
    """
    check_balance(balance)
    movies = movie_genres(rows)
    collapsed = movies[["movie_id", "genre"]]
    check_minimums(collapsed, min_per_split)
    balanced = stratified_split(undersample(collapsed, seed), seed)
    balanced_ova = ova_sets(balanced, seed)
    if balance == "undersample":
        labels = balanced.assign(weight=1.0)
        ova = {genre: frame.assign(weight=1.0) for genre, frame in balanced_ova.items()}
    else:
        labels = with_dropped_in_train(balanced, collapsed)
        labels["weight"] = class_weights(labels)
        ova = weighted_ova_sets(labels, balanced_ova, seed)
    present = np.bincount(genre_codes(labels), minlength=_N) > 0
    classes = [g for g, here in zip(GENRES, present, strict=True) if here]
    return PreparedLabels(
        labels=labels,
        ova=ova,
        classes=classes,
        counts=_split_counts(labels, classes),
        seed=seed,
        movies=movies,
        balance=balance,
    )

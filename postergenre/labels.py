"""Label processing from the method report (sections 1.1 and 3.1) as pure, vectorised functions.

Steps: collapse each movie to its least common genre, undersample every genre to the smallest one,
split 70/15/15 per genre, one-hot encode, and build the 70/30 one-vs-all (OvA) sets.

Everything runs on small integer codes (genre = index in ``GENRES``, split = index in ``SPLITS``) with
numpy instead of per-group Python, so a letterboxd-sized snapshot (~1M rows) takes a fraction of a
second. Randomness comes from ``numpy.random.default_rng([seed, stage])``: each stage has its own
stream, so changing one never shifts the draws of another. Results depend only on the *set* of input
rows and the seed, never on the row order: frames are put in ``movie_id`` order before anything random
happens.

Random sampling within groups uses one trick throughout (``_shuffled_blocks``): shuffle all rows once and
stable-sort the shuffled rows by group, so each group becomes a contiguous block in uniformly random
order; "draw k from a group" is then "read k rows of its block" (``_take``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pandas as pd

from postergenre.genres import GENRES

SPLITS: tuple[str, ...] = ("train", "val", "test")
GENRE_DTYPE = pd.CategoricalDtype(list(GENRES))
SPLIT_DTYPE = pd.CategoricalDtype(list(SPLITS))

_N = len(GENRES)
_GENRE_INDEX = {g: i for i, g in enumerate(GENRES)}
_SPLIT_INDEX = {s: i for i, s in enumerate(SPLITS)}
# Stream ids for default_rng([seed, stream]).
_BALANCE, _SPLIT, _OVA = 1, 2, 3


@dataclass
class PreparedLabels:
    """Everything the training steps need from a snapshot's labels.

    ``labels``: movie_id, genre, split (one row per kept movie, sorted by movie_id).
    ``ova``: genre -> frame of movie_id, label (1 = that genre), split; see ``ova_sets``.
    ``classes``: the genres present, in ``GENRES`` order (the one-hot column order).
    ``counts``: split -> genre -> number of movies in ``labels``.
    """

    labels: pd.DataFrame
    ova: dict[str, pd.DataFrame]
    classes: list[str]
    counts: dict[str, dict[str, int]]
    seed: int


def _codes(values: pd.Series, index: dict[str, int], what: str) -> np.ndarray:
    """Map names to their int8 index in ``index``; unknown or missing names raise ValueError.

    Categorical input (every frame this module returns) is remapped through its few categories; other
    input is factorized first, so the Python work is per distinct name, never per row.
    """
    if isinstance(values.dtype, pd.CategoricalDtype):
        codes, uniques = values.cat.codes.to_numpy(), values.cat.categories
    else:
        codes, uniques = pd.factorize(values)
    lut = np.array([index.get(u, -1) for u in uniques], dtype=np.int8)
    missing = bool((codes < 0).any())
    if missing or (lut < 0).any():
        bad = sorted(str(u) for u in uniques if u not in index) + (["<missing>"] if missing else [])
        raise ValueError(f"unknown {what}(s): {', '.join(bad)}")
    return lut[codes]


def _genre_codes(frame: pd.DataFrame) -> np.ndarray:
    return _codes(frame["genre"], _GENRE_INDEX, "genre")


def _by_movie(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` in movie_id order with a fresh index; one row per movie is required."""
    ids = frame["movie_id"].to_numpy(dtype=np.int64)
    if not (ids[1:] > ids[:-1]).all():
        frame = frame.iloc[np.argsort(ids, kind="stable")]
        ids = frame["movie_id"].to_numpy(dtype=np.int64)
        if (ids[1:] == ids[:-1]).any():
            raise ValueError("movie_id must be unique (one row per movie)")
    return frame.reset_index(drop=True)


class _Blocks(NamedTuple):
    """Row indices grouped by group id; group g's rows are ``order[starts[g]:starts[g] + sizes[g]]``."""

    order: np.ndarray
    starts: np.ndarray
    sizes: np.ndarray


def _shuffled_blocks(groups: np.ndarray, n_groups: int, rng: np.random.Generator) -> _Blocks:
    """Rows grouped by ``groups`` (ascending ids), in uniformly random order inside each group.

    One global permutation plus a stable sort (a radix sort on these small ints) does every group at once.
    """
    perm = rng.permutation(groups.size)
    order = perm[np.argsort(groups[perm], kind="stable")]
    sizes = np.bincount(groups, minlength=n_groups)
    return _Blocks(order, np.cumsum(sizes) - sizes, sizes)


def _take(blocks: _Blocks, counts: np.ndarray, offsets: np.ndarray | None = None) -> np.ndarray:
    """Row indices of ``counts[g]`` consecutive rows of each group's shuffled block.

    Reading starts at ``offsets[g]`` (default 0) and wraps around the block, so any window of a
    uniformly shuffled block is a uniform random subset of the group.
    """
    group = np.repeat(np.arange(counts.size), counts)
    within = np.arange(group.size) - np.repeat(np.cumsum(counts) - counts, counts)
    if offsets is not None:
        within = (within + offsets[group]) % blocks.sizes[group]
    return blocks.order[blocks.starts[group] + within]


def _mask(n: int, rows: np.ndarray) -> np.ndarray:
    keep = np.zeros(n, dtype=bool)
    keep[rows] = True
    return keep


def genre_movie_counts(rows: pd.DataFrame) -> pd.Series:
    """Number of movies carrying each genre (all 19, zeros included), indexed by genre in GENRES order.

    ``rows`` holds one (movie_id, genre) pair per row, deduplicated by ingest, so a row count per genre
    is a movie count.
    """
    counts = np.bincount(_genre_codes(rows), minlength=_N)
    return pd.Series(counts, index=pd.Index(list(GENRES), name="genre"), name="movies")


def _rarity_rank(counts: np.ndarray) -> np.ndarray:
    """rank[genre code]: 0 for the least common genre; ties go to the alphabetically first genre."""
    order = np.lexsort((np.arange(counts.size), counts))
    rank = np.empty(counts.size, dtype=np.int8)
    rank[order] = np.arange(counts.size)
    return rank


def collapse(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per movie (sorted by movie_id) with its least common genre in this snapshot.

    Least common = fewest movies carrying it (``genre_movie_counts``); ties are broken by genre name,
    alphabetical first (``GENRES`` order). ``rows`` must be deduplicated (ingest does it): a repeated
    (movie_id, genre) pair would count twice. Rows are sorted by movie_id only if they are not already,
    then the rarest genre of each movie is a segmented minimum of the genres' rarity ranks.
    """
    ids = rows["movie_id"].to_numpy(dtype=np.int64)
    codes = _genre_codes(rows)
    rarity = _rarity_rank(np.bincount(codes, minlength=_N))
    rank = rarity[codes]
    if not (ids[1:] >= ids[:-1]).all():
        order = np.argsort(ids, kind="stable")
        ids, rank = ids[order], rank[order]
    first = np.ones(ids.size, dtype=bool)
    first[1:] = ids[1:] != ids[:-1]
    rarest = np.full(int(first.sum()), _N, dtype=np.int8)
    np.minimum.at(rarest, np.cumsum(first) - 1, rank)
    genre = pd.Categorical.from_codes(np.argsort(rarity)[rarest], dtype=GENRE_DTYPE)
    return pd.DataFrame({"movie_id": ids[first], "genre": genre})


def balance(collapsed: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Undersample every genre to the size of the smallest one (uniformly, seeded); sorted by movie_id.

    Genres with no movie at all are ignored: they neither set the minimum nor appear in the output (the
    report's snapshot had all 19; a small or filtered snapshot may not).
    """
    frame = _by_movie(collapsed)
    codes = _genre_codes(frame)
    blocks = _shuffled_blocks(codes, _N, np.random.default_rng([seed, _BALANCE]))
    sizes = blocks.sizes
    smallest = sizes[sizes > 0].min() if sizes.any() else 0
    keep = _mask(codes.size, _take(blocks, np.minimum(sizes, smallest)))
    return pd.DataFrame(
        {
            "movie_id": frame["movie_id"].to_numpy(dtype=np.int64)[keep],
            "genre": pd.Categorical.from_codes(codes[keep], dtype=GENRE_DTYPE),
        }
    )


def split_sizes(n: np.ndarray, fractions: Sequence[float] = (0.7, 0.15, 0.15)) -> np.ndarray:
    """Per-class (train, val, test) sizes: round(f_train*n), round(f_val*n), the rest to test.

    ``round`` is numpy's (half to even, like Python's). For tiny classes the val size is clipped so that
    train + val never exceeds n.
    """
    n = np.asarray(n, dtype=np.int64)
    n_train = np.round(fractions[0] * n).astype(np.int64)
    n_val = np.minimum(np.round(fractions[1] * n).astype(np.int64), n - n_train)
    return np.stack([n_train, n_val, n - n_train - n_val], axis=-1)


def stratified_split(
    balanced: pd.DataFrame, seed: int, fractions: Sequence[float] = (0.7, 0.15, 0.15)
) -> pd.DataFrame:
    """Add a ``split`` column (train/val/test) with exact per-genre proportions; sorted by movie_id.

    Each genre's movies are put in a random (seeded) order and cut at ``split_sizes``, so every split
    holds the same share of every genre.
    """
    if len(fractions) != 3 or min(fractions) < 0 or not np.isclose(sum(fractions), 1.0):
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {fractions}")
    frame = _by_movie(balanced)
    codes = _genre_codes(frame)
    blocks = _shuffled_blocks(codes, _N, np.random.default_rng([seed, _SPLIT]))
    sizes = split_sizes(blocks.sizes, fractions)
    split = np.full(codes.size, 2, dtype=np.int8)
    split[_take(blocks, sizes[:, 0])] = 0
    split[_take(blocks, sizes[:, 1], offsets=sizes[:, 0])] = 1
    return pd.DataFrame(
        {
            "movie_id": frame["movie_id"].to_numpy(dtype=np.int64),
            "genre": pd.Categorical.from_codes(codes, dtype=GENRE_DTYPE),
            "split": pd.Categorical.from_codes(split, dtype=SPLIT_DTYPE),
        }
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


def spread(n: int, available: Sequence[int]) -> list[int]:
    """Share ``n`` draws as evenly as possible over groups holding ``available`` items (water-filling).

    Every group gets the same quota; a group with fewer items gives all it has and the shortfall is
    spread evenly over the others. Draws that do not divide evenly go one each to the first groups (in
    sequence order, i.e. GENRES order) that still have items. If ``n`` is at least the total, everything
    is taken.
    """
    take = list(available)
    if n >= sum(take):
        return take
    left, open_ = n, sorted(range(len(take)), key=take.__getitem__)
    while take[open_[0]] <= left // len(open_):  # fills up: give all it has
        left -= take[open_.pop(0)]
    level, extra = divmod(left, len(open_))
    for rank, group in enumerate(sorted(open_)):
        take[group] = level + (rank < extra)
    return take


def ova_sets(labels: pd.DataFrame, seed: int, negative_ratio: float = 0.7) -> dict[str, pd.DataFrame]:
    """Per genre, a binary set (movie_id, label, split) sorted by (split in SPLITS order, movie_id).

    Built split by split from that split's movies only, so no movie crosses splits: all of the split's
    positives (movies of the genre) plus ``round(n_pos * r / (1 - r))`` negatives (r = 0.7 gives the
    report's 70/30), drawn uniformly at random within each of the other genres with an equal quota per
    genre (``spread``: a genre that runs short gives all it has and the rest is spread evenly). If the
    split has too few negatives, all of them are taken and the set holds less than r negatives. Only
    genres present in ``labels`` get a set.

    Each (split, genre) group is shuffled once; every OvA set reads its negatives as a window of that
    shuffle starting at its own random offset. Each window is a uniform random subset, and the cost per
    set is proportional to its size rather than to the whole frame.
    """
    if not 0 <= negative_ratio < 1:
        raise ValueError(f"negative_ratio must be in [0, 1), got {negative_ratio}")
    frame = _by_movie(labels)
    splits = _codes(frame["split"], _SPLIT_INDEX, "split")
    frame = frame.iloc[np.argsort(splits, kind="stable")]  # (split, movie_id) order: output order
    ids, codes, splits = frame["movie_id"].to_numpy(dtype=np.int64), _genre_codes(frame), np.sort(splits)
    rng = np.random.default_rng([seed, _OVA])
    blocks = _shuffled_blocks(splits.astype(np.int16) * _N + codes, len(SPLITS) * _N, rng)
    available = blocks.sizes.reshape(len(SPLITS), _N)
    sets = {}
    for genre in np.flatnonzero(available.sum(axis=0)):
        quota = np.zeros_like(available)
        for s, row in enumerate(available.tolist()):
            positives, row[genre] = row[genre], 0
            quota[s] = spread(round(positives * negative_ratio / (1 - negative_ratio)), row)
            quota[s, genre] = positives
        offsets = rng.integers(0, np.maximum(blocks.sizes, 1))
        keep = np.flatnonzero(_mask(ids.size, _take(blocks, quota.ravel(), offsets)))
        sets[GENRES[genre]] = pd.DataFrame(
            {
                "movie_id": ids[keep],
                "label": (codes[keep] == genre).astype(np.int8),
                "split": pd.Categorical.from_codes(splits[keep], dtype=SPLIT_DTYPE),
            }
        )
    return sets


def _split_counts(labels: pd.DataFrame, classes: list[str]) -> dict[str, dict[str, int]]:
    groups = _codes(labels["split"], _SPLIT_INDEX, "split").astype(np.int16) * _N + _genre_codes(labels)
    table = np.bincount(groups, minlength=len(SPLITS) * _N).reshape(len(SPLITS), _N)
    return {s: {g: int(table[i, _GENRE_INDEX[g]]) for g in classes} for i, s in enumerate(SPLITS)}


def prepare_labels(rows: pd.DataFrame, seed: int) -> PreparedLabels:
    """The report's whole label pipeline: collapse -> balance -> stratified split -> OvA sets."""
    labels = stratified_split(balance(collapse(rows), seed), seed)
    present = np.bincount(_genre_codes(labels), minlength=_N) > 0
    classes = [g for g, here in zip(GENRES, present, strict=True) if here]
    return PreparedLabels(
        labels=labels,
        ova=ova_sets(labels, seed),
        classes=classes,
        counts=_split_counts(labels, classes),
        seed=seed,
    )

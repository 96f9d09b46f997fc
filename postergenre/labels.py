"""Label processing from the method report (sections 1.1 and 3.1) as pure, vectorised functions.

Steps: collapse each movie to its least common genre, undersample every genre to the smallest one,
split 70/15/15 per genre, one-hot encode, and build the 70/30 one-vs-all (OvA) sets.

Everything runs on small integer codes (genre = index in ``GENRES``, split = index in ``SPLITS``) with
numpy instead of per-group Python, so a letterboxd-sized snapshot (~1M rows) takes a fraction of a
second. Randomness comes from ``numpy.random.default_rng([seed, stage])``: each stage has its own
stream, so changing one never shifts the draws of another. Results depend only on the *set* of input
rows and the seed, never on the row order: frames are put in ``movie_id`` order before anything random
happens.

Random sampling works per group (a genre, or a (split, genre) pair) over one radix-sorted grouping of
the rows (``_blocks``): ``Generator.choice`` without replacement per group where a few rows are wanted
(``_draw``), an in-place shuffle per group where all are (``_shuffled``), then vectorised slices
(``_windows``). No Python loop ever runs per row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from postergenre.genres import GENRES

SPLITS: tuple[str, ...] = ("train", "val", "test")
GENRE_DTYPE = pd.CategoricalDtype(list(GENRES))
SPLIT_DTYPE = pd.CategoricalDtype(list(SPLITS))

_N = len(GENRES)
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


def _codes(values: pd.Series, names: tuple[str, ...], what: str) -> np.ndarray:
    """Index of each value in ``names`` as int8; unknown or missing values raise ValueError.

    Categorical input (every frame this module returns) is remapped through its few categories; anything
    else goes through one pyarrow hash lookup (``index_in``), never a Python loop over rows.
    """
    if isinstance(values.dtype, pd.CategoricalDtype):
        known = [names.index(c) if c in names else -1 for c in values.cat.categories]
        codes = np.take(np.array([*known, -1], dtype=np.int8), values.cat.codes.to_numpy())  # -1: missing
    else:
        found = pc.index_in(pa.array(values, from_pandas=True), value_set=pa.array(names))
        codes = found.fill_null(-1).to_numpy().astype(np.int8)
    if (codes < 0).any():
        bad = sorted({str(v) for v in values[codes < 0]})
        raise ValueError(f"unknown {what}(s): {', '.join(bad)}")
    return codes


def _genre_codes(frame: pd.DataFrame) -> np.ndarray:
    return _codes(frame["genre"], GENRES, "genre")


def _split_codes(frame: pd.DataFrame) -> np.ndarray:
    return _codes(frame["split"], SPLITS, "split")


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


def _blocks(groups: np.ndarray, n_groups: int) -> _Blocks:
    """Group rows by their small int group id (one stable radix sort; row order is kept inside a group)."""
    sizes = np.bincount(groups, minlength=n_groups)
    return _Blocks(np.argsort(groups, kind="stable"), np.cumsum(sizes) - sizes, sizes)


def _draw(blocks: _Blocks, counts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Row indices: ``counts[g]`` rows drawn uniformly without replacement from each group g (unsorted).

    numpy's Floyd / partial shuffle makes about ``counts[g]`` random draws per group, not a full shuffle.
    """
    groups = zip(blocks.starts.tolist(), blocks.sizes.tolist(), counts.tolist(), strict=True)
    picks = [
        blocks.order[start + rng.choice(size, n, replace=False, shuffle=False)]
        for start, size, n in groups
        if n
    ]
    return np.concatenate(picks) if picks else np.zeros(0, dtype=np.int64)


def _shuffled(blocks: _Blocks, rng: np.random.Generator) -> np.ndarray:
    """``blocks.order`` with every group's rows shuffled in place (one cheap call per group)."""
    order = blocks.order.copy()
    for start, size in zip(blocks.starts.tolist(), blocks.sizes.tolist(), strict=True):
        rng.shuffle(order[start : start + size])
    return order


def _windows(shuffled: np.ndarray, blocks: _Blocks, counts: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Rows ``offsets[g]`` to ``offsets[g] + counts[g] - 1`` of each group's block in ``shuffled``."""
    ends = np.cumsum(counts)
    return shuffled[np.arange(ends[-1]) + np.repeat(blocks.starts + offsets - (ends - counts), counts)]


def _frame(**columns) -> pd.DataFrame:
    """A DataFrame over freshly computed arrays, without the defensive copy."""
    return pd.DataFrame(columns, copy=False)


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
    rank = np.take(rarity, codes)  # np.take: a small-table lookup several times faster than rarity[codes]
    if not (ids[1:] >= ids[:-1]).all():
        order = np.argsort(ids, kind="stable")
        ids, rank = ids[order], rank[order]
    first = np.ones(ids.size, dtype=bool)
    first[1:] = ids[1:] != ids[:-1]
    rarest = np.full(int(first.sum()), _N, dtype=np.int8)
    np.minimum.at(rarest, np.cumsum(first, dtype=np.int32) - 1, rank)
    genre = pd.Categorical.from_codes(np.take(np.argsort(rarity), rarest), dtype=GENRE_DTYPE)
    return _frame(movie_id=ids[np.flatnonzero(first)], genre=genre)


def balance(collapsed: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Undersample every genre to the size of the smallest one (uniformly, seeded); sorted by movie_id.

    Genres with no movie at all are ignored: they neither set the minimum nor appear in the output (the
    report's snapshot had all 19; a small or filtered snapshot may not).
    """
    frame = _by_movie(collapsed)
    codes = _genre_codes(frame)
    blocks = _blocks(codes, _N)
    smallest = blocks.sizes[blocks.sizes > 0].min() if blocks.sizes.any() else 0
    rng = np.random.default_rng([seed, _BALANCE])
    keep = np.sort(_draw(blocks, np.minimum(blocks.sizes, smallest), rng))
    return _frame(
        movie_id=frame["movie_id"].to_numpy(dtype=np.int64)[keep],
        genre=pd.Categorical.from_codes(codes[keep], dtype=GENRE_DTYPE),
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
    blocks = _blocks(codes, _N)
    sizes = split_sizes(blocks.sizes, fractions)
    # Cut each genre's shuffled rows: the first n_train are train, the next n_val val, the rest test.
    shuffled = _shuffled(blocks, np.random.default_rng([seed, _SPLIT]))
    split = np.full(codes.size, 2, dtype=np.int8)
    split[_windows(shuffled, blocks, sizes[:, 0], np.zeros_like(sizes[:, 0]))] = 0
    split[_windows(shuffled, blocks, sizes[:, 1], sizes[:, 0])] = 1
    return _frame(
        movie_id=frame["movie_id"].to_numpy(dtype=np.int64),
        genre=pd.Categorical.from_codes(codes, dtype=GENRE_DTYPE),
        split=pd.Categorical.from_codes(split, dtype=SPLIT_DTYPE),
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

    Sampling: every (split, genre) group is shuffled once; each OvA set reads its negatives from a group
    as a window of that shuffle at its own random offset. A window of a uniform shuffle is a uniform
    random subset, so each set is sampled exactly as if alone; sets of different genres are merely not
    independent of each other, which no binary classifier can see. It keeps 19 sets at ~1ms each.
    """
    if not 0 <= negative_ratio < 1:
        raise ValueError(f"negative_ratio must be in [0, 1), got {negative_ratio}")
    frame = _by_movie(labels)
    frame = frame.iloc[np.argsort(_split_codes(frame), kind="stable")]  # (split, movie_id): the output order
    ids, codes, splits = frame["movie_id"].to_numpy(dtype=np.int64), _genre_codes(frame), _split_codes(frame)
    blocks = _blocks(splits.astype(np.int16) * _N + codes, len(SPLITS) * _N)
    rng = np.random.default_rng([seed, _OVA])
    shuffled = _shuffled(blocks, rng)
    available = blocks.sizes.reshape(len(SPLITS), _N)
    sets = {}
    for genre in np.flatnonzero(available.sum(axis=0)).tolist():
        quota = np.zeros_like(available)
        for s, row in enumerate(available.tolist()):
            positives, row[genre] = row[genre], 0
            quota[s] = spread(round(positives * negative_ratio / (1 - negative_ratio)), row)
        quota = quota.ravel()
        offsets = rng.integers(0, blocks.sizes - quota + 1)
        negatives = _windows(shuffled, blocks, quota, offsets)
        chosen = codes == genre
        chosen[negatives] = True
        keep = np.flatnonzero(chosen)
        sets[GENRES[genre]] = _frame(
            movie_id=ids[keep],
            label=(codes[keep] == genre).astype(np.int8),
            split=pd.Categorical.from_codes(splits[keep], dtype=SPLIT_DTYPE),
        )
    return sets


def _split_counts(labels: pd.DataFrame, classes: list[str]) -> dict[str, dict[str, int]]:
    groups = _split_codes(labels).astype(np.int16) * _N + _genre_codes(labels)
    table = np.bincount(groups, minlength=len(SPLITS) * _N).reshape(len(SPLITS), _N)
    return {s: {g: int(table[i, GENRES.index(g)]) for g in classes} for i, s in enumerate(SPLITS)}


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

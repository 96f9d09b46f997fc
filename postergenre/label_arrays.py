"""Array machinery under the label processing (``labels``): genre and split codes, and seeded sampling.

Frames become small integer codes (genre = index in ``GENRES``, split = index in ``SPLITS``) so that the
rules in ``labels`` run on numpy, not per-row Python. Random draws work per group (a genre, or a (split,
genre) pair) over one stable radix sort of the rows (``blocks``): ``Generator.choice`` without replacement
per group where a few rows are wanted (``draw``), an in-place shuffle per group where all are
(``shuffled``), and vectorised slices of a shuffle (``windows``). Python loops run per group, never per row.

A movie's genre list is an int32 bit mask (bit i = ``GENRES[i]``), stored as canonical names joined by '|'
(``mask_names``) and read back by ``genre_masks``; both work once per distinct list, not per movie.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from postergenre.genres import GENRES

SPLITS: tuple[str, ...] = ("train", "val", "test")
GENRE_DTYPE = pd.CategoricalDtype(list(GENRES))
SPLIT_DTYPE = pd.CategoricalDtype(list(SPLITS))


def codes_of(values: pd.Series, names: tuple[str, ...], what: str) -> np.ndarray:
    """Index of each value in ``names`` as int8; unknown or missing values raise ValueError.

    Categorical input (every frame ``labels`` returns) is remapped through its few categories; anything
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


def genre_codes(frame: pd.DataFrame) -> np.ndarray:
    return codes_of(frame["genre"], GENRES, "genre")


def split_codes(frame: pd.DataFrame) -> np.ndarray:
    return codes_of(frame["split"], SPLITS, "split")


def genre_masks(genres: pd.Series) -> np.ndarray:
    """int32 bit masks (bit i = ``GENRES[i]``) of '|'-joined genre lists; '' is the empty list.

    Parsed once per distinct list, not per row; unknown names or missing lists raise ValueError.
    """
    codes, uniques = pd.factorize(pd.Series(genres, dtype=object))
    if (codes < 0).any():
        raise ValueError("missing genre list")
    index = {g: i for i, g in enumerate(GENRES)}
    masks = []
    for text in uniques:
        names = str(text).split("|") if text else []
        unknown = sorted(set(names) - index.keys())
        if unknown:
            raise ValueError(f"unknown genre(s) in list {text!r}: {', '.join(unknown)}")
        masks.append(sum(1 << index[name] for name in set(names)))
    return np.asarray(masks, dtype=np.int32)[codes] if masks else np.zeros(0, dtype=np.int32)


def mask_names(masks: np.ndarray) -> pd.Categorical:
    """'|'-joined genre names (``GENRES`` order) of genre bit masks; '' for a mask with no bit set."""
    masks = np.asarray(masks, dtype=np.int32)
    # Masks are < 2**19: a counting pass and a lookup table number the distinct ones faster than a sort.
    unique = np.flatnonzero(np.bincount(masks, minlength=1 << len(GENRES)))
    number = np.zeros(1 << len(GENRES), dtype=np.int32)
    number[unique] = np.arange(unique.size, dtype=np.int32)
    names = ["|".join(g for i, g in enumerate(GENRES) if mask >> i & 1) for mask in unique.tolist()]
    return pd.Categorical.from_codes(np.take(number, masks), categories=names)


def by_movie(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` in movie_id order with a fresh index; one row per movie is required."""
    ids = frame["movie_id"].to_numpy(dtype=np.int64)
    if not (ids[1:] > ids[:-1]).all():
        frame = frame.iloc[np.argsort(ids, kind="stable")]
        ids = frame["movie_id"].to_numpy(dtype=np.int64)
        if (ids[1:] == ids[:-1]).any():
            raise ValueError("movie_id must be unique (one row per movie)")
    return frame.reset_index(drop=True)


def frame_of(**columns) -> pd.DataFrame:
    """A DataFrame over freshly computed arrays, without the defensive copy."""
    return pd.DataFrame(columns, copy=False)


class Blocks(NamedTuple):
    """Row indices grouped by group id; group g's rows are ``order[starts[g]:starts[g] + sizes[g]]``."""

    order: np.ndarray
    starts: np.ndarray
    sizes: np.ndarray


def blocks(groups: np.ndarray, n_groups: int) -> Blocks:
    """Group rows by their small int group id (one stable radix sort; row order is kept inside a group)."""
    sizes = np.bincount(groups, minlength=n_groups)
    return Blocks(np.argsort(groups, kind="stable"), np.cumsum(sizes) - sizes, sizes)


def draw(grouped: Blocks, counts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Row indices: ``counts[g]`` rows drawn uniformly without replacement from each group g (unsorted).

    numpy's Floyd / partial shuffle makes about ``counts[g]`` random draws per group, not a full shuffle.
    """
    groups = zip(grouped.starts.tolist(), grouped.sizes.tolist(), counts.tolist(), strict=True)
    picks = [
        grouped.order[start + rng.choice(size, n, replace=False, shuffle=False)]
        for start, size, n in groups
        if n
    ]
    return np.concatenate(picks) if picks else np.zeros(0, dtype=np.int64)


def shuffled(grouped: Blocks, rng: np.random.Generator) -> np.ndarray:
    """``grouped.order`` with every group's rows shuffled in place (one cheap call per group)."""
    order = grouped.order.copy()
    for start, size in zip(grouped.starts.tolist(), grouped.sizes.tolist(), strict=True):
        rng.shuffle(order[start : start + size])
    return order


def windows(shuffle: np.ndarray, grouped: Blocks, counts: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Rows ``offsets[g]`` to ``offsets[g] + counts[g] - 1`` of each group's block in ``shuffle``."""
    ends = np.cumsum(counts)
    return shuffle[np.arange(ends[-1]) + np.repeat(grouped.starts + offsets - (ends - counts), counts)]


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


def group_weights(groups: np.ndarray, shares: np.ndarray) -> np.ndarray:
    """Per-row weights (float64) giving each present group g a total of ``n * shares[g] / S``.

    n is the number of rows and S the sum of the shares of the groups present; a group's total is split
    equally over its rows. The mean weight is 1, and a group that already holds its share of the rows
    gets exactly 1 (so equal shares over equal-sized groups leave every weight at 1.0).
    """
    sizes = np.bincount(groups, minlength=shares.size)
    present = sizes > 0
    per_row = np.zeros(shares.size)
    per_row[present] = groups.size * shares[present] / (shares[present].sum() * sizes[present])
    return np.take(per_row, groups)

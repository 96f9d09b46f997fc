"""Synthetic letterboxd-shaped snapshots: ``genres.csv`` plus ``posters/<id>.jpg``.

The real letterboxd export cannot be downloaded here, so the demo, tests and benchmarks run on this stand-in.
It mimics what matters to the pipeline (method report, section 1):

* a heavy-tailed genre distribution where Drama and Comedy dominate and Western is the rarest genre once every
  movie is collapsed to its least common genre (at 557,539 movies, about 7,800 Westerns, as in the report);
* ~45% multi-genre movies (up to 5 genres) with realistic, non-uniform co-occurrence;
* posters of varied size whose pixels carry a learnable but noisy signal of the collapsed genre (a per-genre
  palette and motif, buried under random backgrounds, shapes, text-like bars and noise; about a third of the
  posters carry a weak or no signal), so a small CNN beats chance clearly without getting close to perfect;
* optionally, the bad input real exports contain (``faults=True``), each listed in ``faults.json``.

Everything is a function of ``seed``: two runs with the same arguments write byte-identical files. Each
poster's pixels depend only on (seed, movie id, collapsed genre), so posters can be rendered in any order.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from postergenre.genres import GENRES
from postergenre.synth_posters import encode, grain_texture, movie_rng, render_poster

FIRST_ID = 1_000_001
N_GENRES = len(GENRES)
_GI = {g: i for i, g in enumerate(GENRES)}

# Relative weight of each genre as a movie's main genre; extra genres are drawn from the same weights reshaped
# by _AFFINITY. Tuned so that raw and collapsed counts at letterboxd scale resemble the report's Fig. 1.
_MAIN_WEIGHT = {
    "Drama": 26.0, "Comedy": 15.0, "Documentary": 13.0, "Horror": 6.0, "Animation": 5.0, "Thriller": 3.6,
    "Romance": 3.0, "Action": 3.6, "Music": 3.5, "Crime": 2.6, "TV Movie": 3.2, "Family": 1.8,
    "Adventure": 1.6, "Fantasy": 1.4, "Mystery": 1.3, "Science Fiction": 1.6, "History": 1.2, "War": 1.1,
    "Western": 0.645,
}  # fmt: skip
# Chance that a movie with this main genre has more than one genre (documentaries rarely do).
_MULTI_CHANCE = {
    "Documentary": 0.18,
    "Drama": 0.42,
    "Comedy": 0.40,
    "Animation": 0.45,
    "Horror": 0.5,
    "Music": 0.45,
    "TV Movie": 0.6,
}
_DEFAULT_MULTI_CHANCE = 0.7
# Number of extra genres (1..4) of a multi-genre movie.
_EXTRA_COUNT_P = (0.56, 0.27, 0.12, 0.05)
# Symmetric co-occurrence multipliers (1 for unlisted pairs).
_AFFINITY = {
    ("Crime", "Thriller"): 6, ("Crime", "Drama"): 2.5, ("Animation", "Family"): 8, ("Comedy", "Romance"): 8,
    ("Drama", "Romance"): 3, ("Action", "Adventure"): 6, ("Action", "Thriller"): 4, ("Action", "Crime"): 3,
    ("Horror", "Thriller"): 5, ("Mystery", "Thriller"): 6, ("Horror", "Mystery"): 3,
    ("Adventure", "Fantasy"): 5, ("Action", "Science Fiction"): 5, ("Horror", "Science Fiction"): 2,
    ("Fantasy", "Family"): 3, ("History", "War"): 7, ("Drama", "War"): 3, ("Drama", "History"): 4,
    ("Documentary", "Music"): 4, ("Documentary", "History"): 3, ("Comedy", "Family"): 3,
    ("Animation", "Comedy"): 3, ("Animation", "Fantasy"): 3, ("Adventure", "Family"): 3,
    ("Action", "Western"): 3, ("Drama", "Western"): 2, ("Adventure", "Western"): 3, ("Comedy", "TV Movie"): 2,
    ("Drama", "TV Movie"): 2, ("Music", "Comedy"): 1.5, ("Comedy", "Drama"): 1.3, ("Action", "War"): 2.5,
    ("Documentary", "Drama"): 0.3, ("Documentary", "Horror"): 0.2, ("Animation", "Documentary"): 0.3,
}  # fmt: skip


def genre_weights() -> dict[str, float]:
    """The heavy-tailed share of movies whose main genre is each genre (sums to 1).

    Raw per-genre counts follow these shares closely in rank; extra genres of multi-genre movies are drawn
    from them too, reshaped by a co-occurrence affinity (Crime+Thriller, Animation+Family, ...).
    """
    total = sum(_MAIN_WEIGHT.values())
    return {g: _MAIN_WEIGHT[g] / total for g in GENRES}


def _extra_genre_logits() -> np.ndarray:
    """log P(extra genre | main genre), unnormalised, with the main genre itself excluded."""
    w = np.array(list(genre_weights().values()))
    affinity = np.ones((N_GENRES, N_GENRES))
    for (a, b), factor in _AFFINITY.items():
        affinity[_GI[a], _GI[b]] = affinity[_GI[b], _GI[a]] = factor
    logits = np.log(w[None, :] * affinity).astype(np.float32)
    np.fill_diagonal(logits, -np.inf)
    return logits


@dataclass(frozen=True)
class GenreTable:
    """The clean (movie, genre) relation: rows grouped by movie, main genre first."""

    ids: np.ndarray  # movie ids, ascending, shape (movies,)
    counts: np.ndarray  # genres per movie, shape (movies,)
    row_genre: np.ndarray  # genre index per row, shape (rows,)

    @property
    def row_id(self) -> np.ndarray:
        return np.repeat(self.ids, self.counts)


def sample_genres(movies: int, rng: np.random.Generator) -> GenreTable:
    """Draw ids and genres for ``movies`` movies, vectorised (a letterboxd-scale table in about a second)."""
    gaps = 1 + (rng.random(movies) < 0.1) * rng.integers(1, 5, size=movies)  # ids are not contiguous
    ids = FIRST_ID - 1 + np.cumsum(gaps)
    w = np.array(list(genre_weights().values()))
    main = rng.choice(N_GENRES, size=movies, p=w)
    multi_chance = np.array([_MULTI_CHANCE.get(g, _DEFAULT_MULTI_CHANCE) for g in GENRES])
    extra = rng.choice(len(_EXTRA_COUNT_P), size=movies, p=_EXTRA_COUNT_P) + 1
    counts = 1 + (rng.random(movies) < multi_chance[main]) * extra
    # Gumbel top-k: the first k-1 keys give k-1 distinct extra genres drawn successively from the logits.
    uniform = rng.random((movies, N_GENRES), dtype=np.float32)
    keys = _extra_genre_logits()[main] - np.log(-np.log(np.maximum(uniform, np.float32(1e-30))))
    top = np.argpartition(-keys, 4, axis=1)[:, :4]
    top = np.take_along_axis(top, np.argsort(-np.take_along_axis(keys, top, 1), axis=1), 1)
    table = np.concatenate([main[:, None], top], axis=1)
    keep = np.arange(table.shape[1])[None, :] < counts[:, None]
    return GenreTable(ids=ids, counts=counts, row_genre=table[keep])


def collapse(table: GenreTable) -> np.ndarray:
    """Each movie's least common genre index (fewest movies carrying it in the table; ties by name), per movie.

    The label processing's own rule (``labels.least_common_genres``), so posters carry the signal of exactly
    the genre a movie is labelled with.
    """
    from postergenre.labels import least_common_genres  # pulls in pandas and pyarrow: only this needs it

    return least_common_genres(table.row_id, table.row_genre)[1].astype(np.int64)


def _csv_lines(table: GenreTable) -> list[str]:
    """The data lines of genres.csv (no terminators), built with numpy string ufuncs, not a Python loop."""
    names = np.array(GENRES, dtype=np.dtypes.StringDType())
    ids = table.row_id.astype(np.dtypes.StringDType())
    return np.strings.add(np.strings.add(ids, ","), names[table.row_genre]).tolist()


# --- faults -------------------------------------------------------------------------------------------------

_CSV_ID_FAULTS = ("duplicate_rows", "noncanonical_genres", "unknown_genres")
_POSTER_FAULTS = (
    "missing_posters",
    "corrupt_posters",
    "truncated_posters",
    "empty_posters",
    "text_posters",
    "png_posters",
)
_NON_NUMERIC_IDS = ("abc", "12x34", "tt0111161", "NaN", "-", "1000001a")
_HOSTILE_IDS = ("../../x", "/etc/passwd", "..\\x", "../posters/1000001", "C:\\Windows\\x")
_UNKNOWN_GENRES = ("Sci-Fi Horror", "Anime", "Biography", "Film-Noir", "Sport")


def _noncanonical(genre: str, rng: np.random.Generator) -> str:
    """``genre`` spelt as exports sometimes do (other case, extra spaces); still normalises to ``genre``."""
    spellings = [
        f" {genre.lower()} ",
        genre.upper().replace(" ", "  "),
        genre.lower(),
        f"{genre.swapcase()}  ",
    ]
    return spellings[int(rng.integers(len(spellings)))]


@dataclass
class _Fault:
    """One line to insert into genres.csv before clean data line ``at`` (or a rewrite of that line)."""

    name: str
    at: int
    text: str
    record: dict[str, Any]
    replace: bool = False


def _faulty_lines(
    table: GenreTable, lines: list[str], per_fault: int, movie_pick: list[int], rng: np.random.Generator
) -> list[_Fault]:
    """Plan the CSV faults. ``movie_pick`` are movie indices reserved for id-targeted faults."""
    n_lines = len(lines)
    starts = np.concatenate([[0], np.cumsum(table.counts)[:-1]])

    def anywhere() -> int:
        return int(rng.integers(0, n_lines + 1))

    faults: list[_Fault] = []
    picks = iter(movie_pick)
    for i in range(per_fault):
        mid = int(table.ids[0] + i)  # any id: these rows are malformed whatever they name
        shape = [f"{mid},Drama,extra", f'{mid},"Drama', f"{mid}", f'{mid},"Horror,Comedy', f"{mid};Comedy"]
        faults.append(_Fault("malformed_rows", anywhere(), shape[i % len(shape)], {}))
        faults.append(_Fault("blank_lines", anywhere(), "", {}))
        bad = _NON_NUMERIC_IDS[i % len(_NON_NUMERIC_IDS)]
        faults.append(_Fault("non_numeric_ids", anywhere(), f"{bad},Drama", {"id": bad, "genre": "Drama"}))
        bad = _HOSTILE_IDS[i % len(_HOSTILE_IDS)]
        faults.append(_Fault("hostile_ids", anywhere(), f"{bad},Comedy", {"id": bad, "genre": "Comedy"}))
        m = next(picks)
        row = int(starts[m] + rng.integers(table.counts[m]))
        mid, genre = int(table.ids[m]), GENRES[table.row_genre[row]]
        after = int(rng.integers(row + 1, n_lines + 1))  # so keep-first drops exactly the listed line
        faults.append(_Fault("duplicate_rows", after, lines[row], {"id": mid, "genre": genre}))
        m = next(picks)
        row = int(starts[m] + rng.integers(table.counts[m]))
        mid, genre = int(table.ids[m]), GENRES[table.row_genre[row]]
        spelt = _noncanonical(genre, rng)
        faults.append(
            _Fault(
                "noncanonical_genres",
                row,
                f"{mid},{spelt}",
                {"id": mid, "genre": spelt, "canonical": genre},
                replace=True,
            )
        )
        m = next(picks)
        unknown = _UNKNOWN_GENRES[i % len(_UNKNOWN_GENRES)]
        faults.append(
            _Fault(
                "unknown_genres",
                int(starts[m] + table.counts[m]),
                f"{int(table.ids[m])},{unknown}",
                {"id": int(table.ids[m]), "genre": unknown},
            )
        )
    return faults


def _apply_line_faults(lines: list[str], faults: list[_Fault]) -> tuple[list[str], dict[str, list[dict]]]:
    """Insert/rewrite the planned lines; record each fault with its 1-based line number (header = line 1)."""
    listed: dict[str, list[dict]] = {f.name: [] for f in faults}
    out: list[str] = ["id,genre"]
    prev = 0
    for f in sorted(faults, key=lambda f: (f.at, f.replace)):
        out.extend(lines[prev : f.at])
        prev = f.at + 1 if f.replace else f.at
        out.append(f.text)
        listed[f.name].append({"line": len(out), "text": f.text, **f.record})
    out.extend(lines[prev:])
    return out, listed


def _bad_poster(name: str, img: Image.Image, rng: np.random.Generator) -> bytes | None:
    """The bytes written for a poster-level fault (None: no file)."""
    if name == "missing_posters":
        return None
    if name == "corrupt_posters":  # half of them start like a JPEG, so a magic-number check is not enough
        junk = rng.bytes(int(rng.integers(500, 5000)))
        return b"\xff\xd8\xff\xe0" + junk if rng.random() < 0.5 else junk
    if name == "truncated_posters":
        data = encode(img)
        return data[: len(data) // 2]
    if name == "empty_posters":
        return b""
    if name == "text_posters":
        return b"<html><body>404 Not Found</body></html>\n"
    if name == "png_posters":
        return encode(img, "PNG")
    raise ValueError(name)


# --- the snapshot -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SynthSummary:
    """What was generated: counts only, so it can travel as a task result."""

    out: Path
    movies: int
    rows: int
    posters: int
    faults: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "out": str(self.out)}


def _per_fault(movies: int) -> int:
    """A handful of each fault: 3 to 5, so even a small snapshot has the first three variants of each."""
    return max(3, min(5, movies // 100))


def _orphan_ids(ids: np.ndarray, n: int) -> list[int]:
    """Ids with a poster but no genre rows: the first gaps in the id sequence, then past the end."""
    gaps = np.setdiff1d(np.arange(ids[0], ids[-1]), ids)[:n].tolist()
    return gaps + [int(ids[-1]) + 1 + k for k in range(n - len(gaps))]


def generate_snapshot(
    out: Path,
    *,
    movies: int,
    seed: int = 0,
    faults: bool = False,
    posters: bool = True,
    progress: Callable[[int], None] | None = None,
) -> SynthSummary:
    """Write a synthetic snapshot to ``out``: ``genres.csv``, ``posters/`` and, with faults, ``faults.json``.

    ``out`` must not exist or be empty; files are written to a temporary sibling that is renamed into place,
    so a half-written snapshot is never visible. ``progress(n)`` is told that ``n`` more movies are done (the
    calls add up to ``movies``). With ``posters=False`` only genres.csv is written, fast at letterboxd scale.
    """
    out = Path(out)
    if movies < 1:
        raise ValueError(f"movies must be positive, got {movies}")
    if faults and movies < 100:
        raise ValueError(f"faults need at least 100 movies, got {movies}")
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is a file, not a folder: give a new or empty folder")
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty")
    out.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, 0x6E4E])
    table = sample_genres(movies, rng)
    lines = _csv_lines(table)
    listed: dict[str, Any] = {}
    poster_faults: dict[int, str] = {}
    if faults:
        per = _per_fault(movies)
        pick = rng.choice(movies, size=per * (len(_CSV_ID_FAULTS) + len(_POSTER_FAULTS)), replace=False)
        csv_pick, poster_pick = pick[: per * len(_CSV_ID_FAULTS)], pick[per * len(_CSV_ID_FAULTS) :]
        all_lines, listed = _apply_line_faults(
            lines, _faulty_lines(table, lines, per, csv_pick.tolist(), rng)
        )
        listed.update({"bom": True, "crlf": True})
        text = "\ufeff" + "\r\n".join(all_lines) + "\r\n"
        if posters:
            for k, name in enumerate(_POSTER_FAULTS):
                ids = sorted(int(table.ids[m]) for m in poster_pick[k * per : (k + 1) * per])
                listed[name] = ids
                poster_faults.update(dict.fromkeys(ids, name))
            listed["orphan_posters"] = _orphan_ids(table.ids, per)
    else:
        text = "id,genre\n" + "\n".join(lines) + "\n"

    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp's 0700 would survive the rename
        (tmp / "genres.csv").write_bytes(text.encode("utf-8"))
        n_posters = (
            _write_posters(tmp / "posters", table, seed, poster_faults, listed, progress) if posters else 0
        )
        if not posters and progress is not None:
            progress(movies)
        if faults:
            doc = {"seed": seed, "movies": movies, "clean_rows": len(lines), "faults": listed}
            (tmp / "faults.json").write_text(
                json.dumps(doc, indent=2, sort_keys=True) + "\n", encoding="utf-8"
            )
        if out.exists():
            out.rmdir()  # empty, checked above
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    counts = {k: (1 if v is True else len(v)) for k, v in listed.items()}
    return SynthSummary(out=out, movies=movies, rows=len(lines), posters=n_posters, faults=counts)


def _write_posters(
    folder: Path,
    table: GenreTable,
    seed: int,
    poster_faults: dict[int, str],
    listed: dict[str, Any],
    progress: Callable[[int], None] | None,
) -> int:
    """Render every movie's poster (and the faulty and orphan ones); returns the number of files written."""
    folder.mkdir()
    grain = grain_texture(seed)
    genre_of = collapse(table)
    written, pending = 0, 0
    for mid, g in zip(table.ids.tolist(), genre_of.tolist(), strict=True):
        img = render_poster(seed, mid, GENRES[g], grain)
        fault = poster_faults.get(mid)
        data = encode(img) if fault is None else _bad_poster(fault, img, movie_rng(seed, mid, 1))
        if data is not None:
            (folder / f"{mid}.jpg").write_bytes(data)
            written += 1
        pending += 1
        if progress is not None and pending == 100:
            progress(pending)
            pending = 0
    if progress is not None and pending:
        progress(pending)
    for mid in listed.get("orphan_posters", []):
        rng = movie_rng(seed, mid, 2)
        (folder / f"{mid}.jpg").write_bytes(
            encode(render_poster(seed, mid, GENRES[int(rng.integers(N_GENRES))], grain))
        )
        written += 1
    return written

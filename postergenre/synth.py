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

import io
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from postergenre.genres import GENRES

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


# --- posters ------------------------------------------------------------------------------------------------

# Per genre: (main colour, motif colour, motif). Motifs are drawn by _draw_motif.
_STYLE: dict[str, tuple[tuple[int, int, int], tuple[int, int, int], str]] = {
    "Action": ((230, 110, 30), (20, 150, 170), "streaks"),
    "Adventure": ((70, 140, 60), (230, 190, 60), "mountains"),
    "Animation": ((250, 200, 0), (240, 40, 160), "blobs"),
    "Comedy": ((255, 235, 90), (250, 250, 250), "dots"),
    "Crime": ((40, 30, 30), (200, 20, 20), "bars"),
    "Documentary": ((200, 200, 195), (60, 60, 60), "frame"),
    "Drama": ((70, 90, 120), (210, 200, 190), "portrait"),
    "Family": ((120, 200, 250), (255, 210, 80), "bigdots"),
    "Fantasy": ((110, 40, 160), (180, 230, 255), "rings"),
    "History": ((150, 110, 60), (240, 220, 170), "double_frame"),
    "Horror": ((15, 5, 5), (150, 0, 0), "vignette"),
    "Music": ((200, 20, 200), (20, 240, 240), "equalizer"),
    "Mystery": ((20, 70, 80), (160, 140, 200), "blinds"),
    "Romance": ((240, 130, 170), (255, 240, 240), "couple"),
    "Science Fiction": ((10, 20, 70), (120, 220, 255), "stars"),
    "TV Movie": ((190, 220, 200), (240, 160, 140), "grid"),
    "Thriller": ((40, 50, 70), (190, 190, 200), "slashes"),
    "War": ((100, 110, 60), (60, 50, 30), "camo"),
    "Western": ((210, 120, 40), (250, 220, 120), "horizon"),
}
_NO_SIGNAL_SHARE = 0.2  # posters with no genre signal at all
_WEAK_SIGNAL_SHARE = 0.15  # posters with a faint one
_STRONG_SIGNAL = (0.55, 1.0)  # strength range of the rest: lower it to make the task harder
_GREY_SHARE = 0.01  # single-channel JPEGs exist in real exports
_NOISE_SIZE = 512


def _movie_rng(seed: int, movie_id: int, stream: int = 0) -> np.random.Generator:
    """A movie's own random stream, so its poster does not depend on any other poster."""
    return np.random.default_rng([seed, movie_id, 0x5EED, stream])


def _grain(seed: int) -> Image.Image:
    """A shared film-grain field (mean 128), cropped at a random offset and blended into each poster.

    Cropping one precomputed field and blending it is far cheaper than drawing fresh noise per poster; the
    blend also lowers each poster's contrast by a random amount, one more nuisance for the classifier.
    """
    rng = np.random.default_rng([seed, 0xB0A7])
    field = rng.normal(128, 60, size=(_NOISE_SIZE, _NOISE_SIZE, 3))
    return Image.fromarray(np.clip(field, 0, 255).astype(np.uint8), "RGB")


def _poster_size(rng: np.random.Generator) -> tuple[int, int]:
    """(width, height): portrait around 230x345, widths 180-300, aspect 1.3-1.6; about 3% landscape."""
    if rng.random() < 0.03:
        width = int(rng.integers(300, 421))
        return width, int(round(width / rng.uniform(1.33, 1.8)))
    width = int(rng.integers(180, 301))
    return width, int(round(width * rng.uniform(1.3, 1.6)))


def _signal_strength(rng: np.random.Generator) -> float:
    u = rng.random()
    if u < _NO_SIGNAL_SHARE:
        return 0.0
    if u < _NO_SIGNAL_SHARE + _WEAK_SIGNAL_SHARE:
        return float(rng.uniform(0.1, 0.3))
    return float(rng.uniform(*_STRONG_SIGNAL))


def _mix(a: np.ndarray, b: np.ndarray, t: float) -> tuple[int, int, int]:
    c = np.clip((1 - t) * a + t * b, 0, 255)
    return (int(c[0]), int(c[1]), int(c[2]))


def _draw_motif(
    draw: ImageDraw.ImageDraw,
    motif: str,
    w: int,
    h: int,
    colour: tuple[int, int, int],
    rng: np.random.Generator,
) -> None:
    """A genre's shape/texture motif, with random jitter so it is a tendency rather than a template."""
    j = rng.uniform(0.8, 1.25)  # scale jitter
    if motif in ("streaks", "slashes"):
        step, slope = (int(22 * j), 0.6) if motif == "streaks" else (int(40 * j), -1.0)
        for x in range(-h, w + h, step):
            draw.line([(x, 0), (x + slope * h, h)], fill=colour, width=max(2, step // 4))
    elif motif in ("bars", "blinds"):
        step = int((14 if motif == "bars" else 18) * j)
        for p in range(0, w if motif == "bars" else h, step):
            box = (p, 0, p + step // 3, h) if motif == "bars" else (0, p, w, p + step // 2)
            draw.rectangle(box, fill=colour)
    elif motif == "mountains":
        base = h * rng.uniform(0.6, 0.8)
        for _ in range(3):
            cx, top = rng.uniform(0, w), base - rng.uniform(0.2, 0.4) * h
            draw.polygon([(cx - w * 0.4, h), (cx, top), (cx + w * 0.4, h)], fill=colour)
    elif motif in ("blobs", "bigdots", "dots", "stars", "camo"):
        n, r0, r1 = {
            "blobs": (5, 0.15, 0.3),
            "bigdots": (14, 0.06, 0.1),
            "dots": (40, 0.02, 0.04),
            "stars": (120, 0.004, 0.012),
            "camo": (30, 0.06, 0.14),
        }[motif]
        xs, ys = rng.uniform(0, w, n), rng.uniform(0, h, n)
        rs = rng.uniform(r0, r1, n) * w * j
        for x, y, r in zip(xs, ys, rs, strict=True):
            ry = r * (rng.uniform(0.5, 1.5) if motif == "camo" else 1.0)
            draw.ellipse((x - r, y - ry, x + r, y + ry), fill=colour)
    elif motif in ("frame", "double_frame"):
        m = int(w * 0.1 * j)
        draw.rectangle((m, m, w - m, h - m), outline=colour, width=max(3, m // 2))
        if motif == "double_frame":
            draw.rectangle((2 * m, 2 * m, w - 2 * m, h - 2 * m), outline=colour, width=max(2, m // 4))
    elif motif in ("portrait", "couple"):
        heads = [(0.5, 0.38)] if motif == "portrait" else [(0.36, 0.4), (0.64, 0.4)]
        for fx, fy in heads:
            cx, cy, r = w * fx, h * fy, w * 0.17 * j
            draw.ellipse((cx - r, cy - 1.3 * r, cx + r, cy + 1.3 * r), fill=colour)
            draw.ellipse((cx - 2.2 * r, cy + 1.5 * r, cx + 2.2 * r, cy + 5 * r), fill=colour)
    elif motif == "rings":
        cx, cy = w * rng.uniform(0.3, 0.7), h * rng.uniform(0.3, 0.6)
        for r in np.arange(12, max(w, h), 18 * j):
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=colour, width=4)
    elif motif == "vignette":
        for i in range(6):
            m = i * w * 0.05
            draw.rectangle((m, m, w - m, h - m), outline=colour, width=int(w * 0.05))
    elif motif == "equalizer":
        n = int(9 * j)
        bw = w / n
        for i, top in enumerate(rng.uniform(0.3, 0.85, n) * h):
            draw.rectangle((i * bw + 2, top, (i + 1) * bw - 2, h), fill=colour)
    elif motif == "grid":
        step = int(30 * j)
        for p in range(0, max(w, h), step):
            draw.line([(p, 0), (p, h)], fill=colour, width=3)
            draw.line([(0, p), (w, p)], fill=colour, width=3)
    elif motif == "horizon":
        y = h * rng.uniform(0.55, 0.75)
        draw.rectangle((0, y, w, h), fill=colour)
        r, cx = w * 0.15 * j, w * rng.uniform(0.25, 0.75)
        draw.ellipse((cx - r, y - 1.6 * r, cx + r, y + 0.4 * r), fill=colour)
    else:  # pragma: no cover - guarded by the _STYLE table
        raise ValueError(f"unknown motif {motif!r}")


def _colours(rng: np.random.Generator, n: int) -> list[tuple[int, int, int]]:
    return [(int(r), int(g), int(b)) for r, g, b in rng.integers(0, 256, (n, 3))]


def _draw_distractors(draw: ImageDraw.ImageDraw, w: int, h: int, rng: np.random.Generator) -> None:
    """Genre-independent clutter: a photo-like block, random shapes and title/credit bars.

    Random numbers are drawn in batches: per-call overhead of the generator dominates otherwise.
    """
    u = rng.random(8)
    if u[0] < 0.45:  # a "still" covering a large part of the poster
        x0, y0, x1, y1 = u[1] * 0.3 * w, u[2] * 0.5 * h, (0.5 + 0.4 * u[3]) * w, (0.3 + 0.3 * u[4]) * h
        x1, y1 = x0 + x1, y0 + y1
        n = int(rng.integers(2, 6))
        cx, cy, r = rng.uniform(x0, x1, n), rng.uniform(y0, y1, n), rng.uniform(0.05, 0.2, n) * w
        fills = _colours(rng, n + 1)
        draw.rectangle((x0, y0, x1, y1), fill=fills[n])
        for i in range(n):
            draw.ellipse((cx[i] - r[i], cy[i] - r[i], cx[i] + r[i], cy[i] + r[i]), fill=fills[i])
    n = int(rng.integers(1, 7))
    scale, offset = (
        np.array([1.2 * w, 1.2 * h, 0.5 * w, 0.4 * h, 1]),
        np.array([-0.2 * w, -0.2 * h, 0.1 * w, 0.1 * h, 0]),
    )
    box = rng.random((n, 5)) * scale + offset  # x0, y0, width, height, rectangle-or-ellipse
    for (x0, y0, bw, bh, kind), fill in zip(box, _colours(rng, n), strict=True):
        (draw.rectangle if kind < 0.5 else draw.ellipse)((x0, y0, x0 + bw, y0 + bh), fill=fill)
    ink = _colours(rng, 1)[0] if u[5] < 0.5 else (245, 245, 245)
    title_y = (0.03 + 0.12 * u[6] if u[7] < 0.5 else 0.7 + 0.15 * u[6]) * h
    x, size = rng.uniform(0.05, 0.2) * w, rng.uniform(0.05, 0.09) * w
    widths, gaps = size * rng.uniform(0.4, 1.0, 40), size * rng.uniform(0.15, 0.6, 40)
    for cw, gap in zip(widths, gaps, strict=True):  # title "letters"
        if x >= w * 0.9:
            break
        draw.rectangle((x, title_y, x + cw, title_y + 1.6 * size), fill=ink)
        x += cw + gap
    lines = int(rng.integers(2, 5))
    y = h * rng.uniform(0.88, 0.92)
    left, right = w * rng.uniform(0.05, 0.2, lines), w * rng.uniform(0.8, 0.95, lines)
    for i in range(lines):  # billing block
        draw.rectangle((left[i], y + 6 * i, right[i], y + 6 * i + 3), fill=ink)


def render_poster(seed: int, movie_id: int, genre: str, grain: Image.Image | None = None) -> Image.Image:
    """The poster of ``movie_id`` whose collapsed genre is ``genre``; a pure function of its arguments."""
    rng = _movie_rng(seed, movie_id)
    grain = _grain(seed) if grain is None else grain
    w, h = _poster_size(rng)
    strength = _signal_strength(rng)
    main, accent, motif = _STYLE[genre]
    main_c, accent_c = np.array(main, float), np.array(accent, float)
    top = _mix(rng.uniform(0, 255, 3), main_c + rng.normal(0, 30, 3), 0.85 * strength)
    bottom = _mix(rng.uniform(0, 255, 3), main_c + rng.normal(0, 30, 3), 0.85 * strength)
    ramp = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
    grad = (1 - ramp) * np.array(top, np.float32) + ramp * np.array(bottom, np.float32)
    img = Image.fromarray(grad.astype(np.uint8), "RGB").resize((w, h), Image.Resampling.NEAREST)
    if strength > 0:  # drawn half-transparent: the motif colour is pulled towards the background's mean
        ink = _mix(rng.uniform(0, 255, 3), accent_c, strength)
        ink = _mix((np.array(top) + np.array(bottom)) / 2, np.array(ink, float), 0.3 + 0.6 * strength)
        _draw_motif(ImageDraw.Draw(img), motif, w, h, ink, rng)
    _draw_distractors(ImageDraw.Draw(img), w, h, rng)
    oy, ox = int(rng.integers(0, _NOISE_SIZE - h + 1)), int(rng.integers(0, _NOISE_SIZE - w + 1))
    img = Image.blend(img, grain.crop((ox, oy, ox + w, oy + h)), float(rng.uniform(0.05, 0.35)))
    return img.convert("L") if rng.random() < _GREY_SHARE else img


def _encode(img: Image.Image, fmt: str = "JPEG") -> bytes:
    buf = io.BytesIO()
    if fmt == "JPEG":
        img.save(buf, "JPEG", quality=85)
    else:
        img.save(buf, fmt)
    return buf.getvalue()


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
        data = _encode(img)
        return data[: len(data) // 2]
    if name == "empty_posters":
        return b""
    if name == "text_posters":
        return b"<html><body>404 Not Found</body></html>\n"
    if name == "png_posters":
        return _encode(img, "PNG")
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
    grain = _grain(seed)
    genre_of = collapse(table)
    written, pending = 0, 0
    for mid, g in zip(table.ids.tolist(), genre_of.tolist(), strict=True):
        img = render_poster(seed, mid, GENRES[g], grain)
        fault = poster_faults.get(mid)
        data = _encode(img) if fault is None else _bad_poster(fault, img, _movie_rng(seed, mid, 1))
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
        rng = _movie_rng(seed, mid, 2)
        (folder / f"{mid}.jpg").write_bytes(
            _encode(render_poster(seed, mid, GENRES[int(rng.integers(N_GENRES))], grain))
        )
        written += 1
    return written

"""Synthetic posters: each one's pixels carry a learnable but noisy signal of its collapsed genre (a per-genre
palette and motif, buried under random backgrounds, shapes, text-like bars and noise; about a third carry a weak
or no signal). A poster depends only on (seed, movie id, genre), so posters render in any order.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw

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


def movie_rng(seed: int, movie_id: int, stream: int = 0) -> np.random.Generator:
    """A movie's own random stream, so its poster does not depend on any other poster."""
    return np.random.default_rng([seed, movie_id, 0x5EED, stream])


def grain_texture(seed: int) -> Image.Image:
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
    rng = movie_rng(seed, movie_id)
    grain = grain_texture(seed) if grain is None else grain
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


def encode(img: Image.Image, fmt: str = "JPEG") -> bytes:
    buf = io.BytesIO()
    if fmt == "JPEG":
        img.save(buf, "JPEG", quality=85)
    else:
        img.save(buf, fmt)
    return buf.getvalue()



"""Inline SVG line charts of genre shares and drift metrics: pure functions of the query dicts.

The machines have no internet, so no charting script from a CDN: the server draws the SVG. Every text that
comes from stored data is escaped; the result is :class:`~markupsafe.Markup`, which templates insert as is.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

# tab20 without its second grey: 19 distinguishable colours, one per canonical genre.
_PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
    "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#dbdb8d",
    "#9edae5",
)  # fmt: skip
_DRIFT_SERIES = {
    (kind, view): f"{view} vs {kind}" for kind in ("previous", "champion") for view in ("raw", "collapsed")
}
_DRIFT_COLOURS = dict(zip(_DRIFT_SERIES.values(), ("#1f77b4", "#2ca02c", "#9467bd", "#8c564b"), strict=True))
_DRIFT_METRICS = (("js", "Jensen–Shannon distance"), ("psi", "PSI"))
_SHARE_VIEWS = (
    ("raw", "Raw share of (movie, genre) rows"),
    ("collapsed", "Collapsed share of movies (one genre each)"),
)


@dataclass(frozen=True)
class Threshold:
    label: str
    value: float
    colour: str


def genre_colours(genres: Iterable[str]) -> dict[str, str]:
    return {g: _PALETTE[i % len(_PALETTE)] for i, g in enumerate(genres)}


def nice_max(value: float) -> float:
    """The smallest 1/2/2.5/5 x 10^k at or above ``value``: round axis ends."""
    if value <= 0:
        return 1.0
    base = 10 ** math.floor(math.log10(value))
    return next(m * base for m in (1, 2, 2.5, 5, 10) if m * base >= value * (1 - 1e-9))


def _finite(value: float | None) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def line_chart_svg(
    x_labels: Sequence[str],
    series: dict[str, Sequence[float | None]],
    *,
    title: str,
    colours: dict[str, str],
    thresholds: Sequence[Threshold] = (),
    percent: bool = False,
    width: int = 760,
    height: int = 300,
) -> Markup:
    """A line chart (markers on every point, gaps at None) with dashed horizontal threshold lines."""
    left, right, top, bottom = 56, 90, 28, 70
    plot_w, plot_h = width - left - right, height - top - bottom
    values = [v for vs in series.values() for v in vs if _finite(v)]
    y_max = nice_max(max([*values, *(t.value for t in thresholds), 0.0]))
    n = len(x_labels)

    def x(i: int) -> float:
        return left + (plot_w / 2 if n == 1 else plot_w * i / (n - 1))

    def y(v: float) -> float:
        return top + plot_h * (1 - min(v, y_max) / y_max)

    def fmt(v: float) -> str:
        return f"{v * 100:.3g}%" if percent else f"{v:.3g}"

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
        f'<text x="{left}" y="16" class="chart-title">{escape(title)}</text>',
    ]
    for k in range(5):
        v = y_max * k / 4
        parts.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{y(v):.1f}" y2="{y(v):.1f}" class="grid"/>'
            f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end" class="tick">{fmt(v)}</text>'
        )
    step = max(1, math.ceil(n / 12))
    for i, label in enumerate(x_labels):
        if i % step == 0 or i == n - 1:
            parts.append(
                f'<text transform="translate({x(i):.1f},{top + plot_h + 12}) rotate(30)" class="tick">'
                f"{escape(label)}</text>"
            )
    for t in thresholds:
        parts.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{y(t.value):.1f}" y2="{y(t.value):.1f}" '
            f'stroke="{escape(t.colour)}" stroke-dasharray="6 4" class="threshold"/>'
            f'<text x="{left + plot_w + 4}" y="{y(t.value) + 4:.1f}" fill="{escape(t.colour)}" class="tick">'
            f"{escape(t.label)} {fmt(t.value)}</text>"
        )
    for name, vs in series.items():
        colour = escape(colours.get(name, "#333"))
        run: list[str] = []
        for i, v in enumerate([*vs, None]):
            if _finite(v):
                run.append(f"{x(i):.1f},{y(v):.1f}")
                parts.append(
                    f'<circle cx="{x(i):.1f}" cy="{y(v):.1f}" r="3" fill="{colour}">'
                    f"<title>{escape(name)} @ {escape(x_labels[i])}: {fmt(v)}</title></circle>"
                )
                continue
            if len(run) > 1:
                parts.append(
                    f'<polyline points="{" ".join(run)}" fill="none" stroke="{colour}" stroke-width="2">'
                    f"<title>{escape(name)}</title></polyline>"
                )
            run = []
    parts.append(
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" class="frame"/></svg>'
    )
    return Markup("".join(parts))


def share_charts(history: dict, colours: dict[str, str]) -> list[Markup]:
    """Raw and collapsed genre shares per snapshot (``queries.genre_share_history``)."""
    ids = [s["id"] for s in history["snapshots"]]
    return [
        line_chart_svg(ids, history["shares"][view], title=title, colours=colours, percent=True)
        for view, title in _SHARE_VIEWS
    ]


def drift_charts(drift: dict) -> tuple[list[Markup], dict[str, str]]:
    """JS distance and PSI per snapshot (``queries.drift_overview``), one series per baseline kind and view,
    with the warn and alert thresholds; and the colours of the series that have data, for the legend."""
    reports = drift["reports"]
    order = list(dict.fromkeys(r["snapshot_id"] for r in reports))
    charts: list[Markup] = []
    drawn: dict[str, str] = {}
    for metric, label in _DRIFT_METRICS:
        series: dict[str, list[float | None]] = {}
        for (kind, view), name in _DRIFT_SERIES.items():
            by_snapshot = {r["snapshot_id"]: r[f"{metric}_{view}"] for r in reports if r["kind"] == kind}
            if by_snapshot:
                series[name] = [by_snapshot.get(s) for s in order]
                drawn[name] = _DRIFT_COLOURS[name]
        t = drift["thresholds"][metric]
        thresholds = [Threshold("warn", t["warn"], "#d69e2e"), Threshold("alert", t["alert"], "#e53e3e")]
        charts.append(
            line_chart_svg(
                order, series, title=f"{label} per snapshot", colours=_DRIFT_COLOURS, thresholds=thresholds
            )
        )
    return charts, drawn

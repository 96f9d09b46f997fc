"""The monitoring pages of postergenre, served by the Airflow api-server under ``/postergenre``.

``plugins/postergenre_plugin.py`` mounts :func:`create_app` into the api-server. Everything here reads what the
pipeline already writes (metadata DB, data store, model registry) and never writes, so a watcher can open it at
any time. Every route needs an Airflow login: the api-server serves plugin apps without one unless asked.

Pages are server-rendered HTML with inline SVG charts (the machines have no internet, so no CDN scripts);
the same data is available as JSON under ``/postergenre/api/``. Links are relative so that the pages work
behind a ``[api] base_url`` prefix and inside the Airflow UI's iframe. Each section loads on its own, so an
unreachable store or an empty home shows a message in that section instead of failing the page.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, TypeVar

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse
from sqlalchemy import Engine, inspect
from sqlalchemy.exc import SQLAlchemyError

from postergenre import db, registry
from postergenre.config import Settings, get_settings
from postergenre.genres import GENRES
from postergenre.log import get_logger
from postergenre.registry import RegistryError
from postergenre.storage import NotFound, ObjectStore, StoreError, open_store

log = get_logger(__name__)

URL_PREFIX = "/postergenre"
SNAPSHOT_HISTORY_LIMIT = 100
ALIAS_LOG_ROWS = 30
_RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_SOURCE_ERRORS = (StoreError, RegistryError, SQLAlchemyError)
# tab20 without its second grey: 19 distinguishable colours, one per canonical genre.
_PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
    "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#dbdb8d",
    "#9edae5",
)  # fmt: skip
_T = TypeVar("_T")


# --------------------------------------------------------------------------------------------- data


@lru_cache(maxsize=4)
def _engine(db_url: str) -> Engine:
    """One pool per DB URL for the api-server's lifetime."""
    return db.make_engine(db_url)


def _schema_ready(engine: Engine) -> bool:
    """A fresh install has no tables yet; the viewer shows that as empty rather than migrating (a write)."""
    return inspect(engine).has_table(db.DriftReport.__tablename__)


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def genre_share_history(settings: Settings, limit: int = SNAPSHOT_HISTORY_LIMIT) -> dict:
    """Per-genre counts and shares of the last ``limit`` snapshots, oldest first, raw and collapsed.

    Raw shares are of (movie, genre) rows, collapsed shares of movies (one genre each after the collapse).
    """
    engine = _engine(settings.db_url)
    rows = []
    if _schema_ready(engine):
        with db.session_scope(engine) as session:
            rows = list(reversed(db.latest_snapshots(session, limit)))
    views = {"raw": [r.genre_counts_raw for r in rows], "collapsed": [r.genre_counts_collapsed for r in rows]}
    seen = {g for counts in views.values() for c in counts for g in c}
    genres = [*GENRES, *sorted(seen - set(GENRES))]
    counts: dict[str, dict[str, list[int]]] = {}
    shares: dict[str, dict[str, list[float | None]]] = {}
    for view, per_snapshot in views.items():
        totals = [sum(int(v) for v in c.values()) for c in per_snapshot]
        counts[view] = {g: [int(c.get(g, 0)) for c in per_snapshot] for g in genres}
        shares[view] = {
            g: [int(c.get(g, 0)) / t if t else None for c, t in zip(per_snapshot, totals, strict=True)]
            for g in genres
        }
    snapshots = [
        {
            "id": r.id,
            "created_at": _iso(r.created_at),
            "movies": r.movies,
            "rows": r.rows,
            "posters": r.posters,
            "quarantined": r.quarantined,
        }
        for r in rows
    ]
    return {"genres": genres, "snapshots": snapshots, "counts": counts, "shares": shares}


def _top_changes(report: dict, view: str = "collapsed", n: int = 5) -> list[dict]:
    per_genre = (report.get(view) or {}).get("per_genre") or {}
    ranked = sorted(per_genre.items(), key=lambda kv: abs(kv[1].get("change") or 0), reverse=True)
    return [
        {"genre": g, **{k: row.get(k) for k in ("baseline_share", "current_share", "change")}}
        for g, row in ranked[:n]
    ]


def drift_overview(settings: Settings) -> dict:
    """Every drift report, oldest first, with the thresholds they are judged against today."""
    engine = _engine(settings.db_url)
    reports = []
    if _schema_ready(engine):
        with db.session_scope(engine) as session:
            reports = db.drift_history(session)
    return {
        "thresholds": {
            "js": {"warn": settings.drift_warn_js, "alert": settings.drift_alert_js},
            "psi": {"warn": settings.drift_warn_psi, "alert": settings.drift_alert_psi},
        },
        "reports": [
            {
                "snapshot_id": r.snapshot_id,
                "baseline_id": r.baseline_id,
                "kind": r.kind,
                "severity": r.severity,
                "js_raw": r.js_raw,
                "js_collapsed": r.js_collapsed,
                "psi_raw": r.psi_raw,
                "psi_collapsed": r.psi_collapsed,
                "reasons": list(r.report.get("reasons", [])),
                "top_changes": _top_changes(r.report),
                "created_at": _iso(r.created_at),
                "report_uri": r.report_uri,
            }
            for r in reports
        ],
    }


def headline_metrics(metrics: dict | None) -> dict:
    """Test-split accuracy and F1 of a version: macro-F1 for the multi-class CNN, F1 for a binary member."""
    test = (metrics or {}).get("test") or {}
    return {"accuracy": test.get("accuracy"), "macro_f1": test.get("macro_f1"), "f1": test.get("f1")}


def _model_summary(store: ObjectStore, name: str) -> dict:
    versions = registry.list_versions(store, name)
    champion = registry.get_champion(store, name)
    by_version = {v["version"]: v for v in versions}
    summary: dict[str, Any] = {"name": name, "versions": len(versions), "champion": None}
    if champion is not None:
        entry = champion["entry"]
        summary["champion"] = {
            "version": champion["version"],
            "generation": champion["generation"],
            "since": champion["since"],
            "reason": entry.get("reason"),
            "actor": entry.get("actor"),
            "metrics": headline_metrics(by_version.get(champion["version"], {}).get("metrics")),
        }
    if versions:
        latest = versions[-1]
        summary["latest_version"] = {
            "version": latest["version"],
            "registered_at": latest["registered_at"],
            "metrics": headline_metrics(latest["metrics"]),
        }
    return summary


def _parallel(fn: Callable[[str], _T], names: Sequence[str]) -> list[_T]:
    """Registry reads are one small GET each on S3: 20 models are read side by side, not in a row."""
    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(fn, names))


def models_overview(store: ObjectStore) -> list[dict]:
    """Every registered model with its champion (and its test metrics) and its newest version."""
    return _parallel(lambda name: _model_summary(store, name), registry.list_models(store))


def alias_log(store: ObjectStore, limit: int = ALIAS_LOG_ROWS) -> list[dict]:
    """The newest champion moves over all models."""
    logs = _parallel(
        lambda name: [{"model": name, **e} for e in registry.history(store, name)],
        registry.list_models(store),
    )
    entries = [e for model_log in logs for e in model_log]
    return sorted(entries, key=lambda e: (e["time"], e["model"], e["generation"]), reverse=True)[:limit]


def model_detail(store: ObjectStore, name: str) -> dict:
    """A model's versions (metrics, lineage, decision), its champion and its full alias log."""
    versions = [registry.show_version(store, name, v["version"]) for v in registry.list_versions(store, name)]
    if not versions:
        raise registry.NotRegistered(f"no model {name!r}")
    return {
        "name": registry.model_key(name),
        "champion": registry.get_champion(store, name),
        "versions": [
            {
                "version": v["version"],
                "registered_at": v["registered_at"],
                "metrics": v["metrics"],
                "headline": headline_metrics(v["metrics"]),
                "decision": v["decision"],
                "lineage": v["lineage"],
                "uri": v["uri"],
            }
            for v in versions
        ],
        "history": registry.history(store, name),
    }


def list_runs(store: ObjectStore) -> list[dict]:
    """Runs that have a report, newest first.

    Objects carry no timestamps in the store contract, so the order is the report's ``generated_at`` when it
    has one, then the run id (Airflow run ids start with their logical date).
    """
    run_ids = sorted({k.split("/")[1] for k in store.list_keys("runs/") if k.endswith("/report.json")})
    runs = []
    for run_id in run_ids:
        report = store.get_json(f"runs/{run_id}/report.json")
        runs.append(
            {
                "run_id": run_id,
                "generated_at": report.get("generated_at"),
                "cnn_test": headline_metrics(report.get("cnn")),
                "promoted": sorted(m for m, d in (report.get("decisions") or {}).items() if d.get("promote")),
            }
        )
    return sorted(runs, key=lambda r: (r["generated_at"] or "", r["run_id"]), reverse=True)


def run_report(store: ObjectStore, run_id: str) -> dict:
    """A run's report.json and report.md; NotFound when the run has no report."""
    if not _RUN_ID_RE.match(run_id):
        raise NotFound(f"no run {run_id!r}")
    report = store.get_json(f"runs/{run_id}/report.json")
    try:
        markdown = store.get_bytes(f"runs/{run_id}/report.md").decode()
    except NotFound:
        markdown = ""
    return {"run_id": run_id, "report": report, "markdown": markdown}


# --------------------------------------------------------------------------------------------- SVG charts


@dataclass(frozen=True)
class Threshold:
    label: str
    value: float
    colour: str


def genre_colours(genres: Iterable[str]) -> dict[str, str]:
    return {g: _PALETTE[i % len(_PALETTE)] for i, g in enumerate(genres)}


def _nice_max(value: float) -> float:
    """The smallest 1/2/2.5/5 x 10^k at or above ``value``: round axis ends."""
    if value <= 0:
        return 1.0
    base = 10 ** math.floor(math.log10(value))
    return next(m * base for m in (1, 2, 2.5, 5, 10) if m * base >= value * (1 - 1e-9))


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
) -> str:
    """A line chart (markers on every point, gaps at None) with dashed horizontal threshold lines."""
    left, right, top, bottom = 56, 90, 28, 70
    plot_w, plot_h = width - left - right, height - top - bottom
    values = [v for vs in series.values() for v in vs if v is not None and math.isfinite(v)]
    y_max = _nice_max(max([*values, *(t.value for t in thresholds), 0.0]))
    n = len(x_labels)

    def x(i: int) -> float:
        return left + (plot_w / 2 if n == 1 else plot_w * i / (n - 1))

    def y(v: float) -> float:
        return top + plot_h * (1 - min(v, y_max) / y_max)

    def fmt(v: float) -> str:
        return f"{v * 100:.3g}%" if percent else f"{v:.3g}"

    esc = html.escape
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-label="{esc(title)}">',
        f"<title>{esc(title)}</title>",
        f'<text x="{left}" y="16" class="chart-title">{esc(title)}</text>',
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
                f"{esc(label)}</text>"
            )
    for t in thresholds:
        parts.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{y(t.value):.1f}" y2="{y(t.value):.1f}" '
            f'stroke="{t.colour}" stroke-dasharray="6 4" class="threshold"/>'
            f'<text x="{left + plot_w + 4}" y="{y(t.value) + 4:.1f}" fill="{t.colour}" class="tick">'
            f"{esc(t.label)} {fmt(t.value)}</text>"
        )
    for name, vs in series.items():
        colour = colours.get(name, "#333")
        run: list[str] = []
        for i, v in enumerate([*vs, None]):
            if v is not None and math.isfinite(v):
                run.append(f"{x(i):.1f},{y(v):.1f}")
                parts.append(
                    f'<circle cx="{x(i):.1f}" cy="{y(v):.1f}" r="3" fill="{colour}">'
                    f"<title>{esc(name)} @ {esc(x_labels[i])}: {fmt(v)}</title></circle>"
                )
                continue
            if len(run) > 1:
                parts.append(
                    f'<polyline points="{" ".join(run)}" fill="none" stroke="{colour}" stroke-width="2">'
                    f"<title>{esc(name)}</title></polyline>"
                )
            run = []
    parts.append(
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" class="frame"/></svg>'
    )
    return "".join(parts)


def legend_html(colours: dict[str, str]) -> str:
    items = "".join(
        f'<li><span class="swatch" style="background:{c}"></span>{html.escape(name)}</li>'
        for name, c in colours.items()
    )
    return f'<ul class="legend">{items}</ul>'


# --------------------------------------------------------------------------------------------- Markdown


_TABLE_RULE = re.compile(r"^\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?$")
_NUMBER = re.compile(r"^[-+]?\d+(\.\d+)?%?$")


def _inline(text: str) -> str:
    out = html.escape(text)
    out = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", out)


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _table_html(header: list[str], rows: list[list[str]]) -> str:
    def td(cell: str, tag: str) -> str:
        cls = ' class="num"' if _NUMBER.match(cell) else ""
        return f"<{tag}{cls}>{_inline(cell)}</{tag}>"

    head = "".join(td(c, "th") for c in header)
    body = "".join("<tr>" + "".join(td(c, "td") for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def markdown_to_html(text: str) -> str:
    """The Markdown the run report uses (headings, pipe tables, paragraphs, bold, code) as HTML.

    Headings move down one level so a report's ``##`` sits under the page's own ``h2``. Anything else is
    kept as escaped paragraph text, so unexpected input is shown, never interpreted.
    """
    lines = text.splitlines()
    out: list[str] = []
    paragraph: list[str] = []

    def flush() -> None:
        if paragraph:
            out.append(f"<p>{_inline(' '.join(paragraph))}</p>")
            paragraph.clear()

    i = 0
    while i < len(lines):
        line = lines[i].strip()
        if line.startswith("|") and i + 1 < len(lines) and _TABLE_RULE.match(lines[i + 1].strip()):
            flush()
            header, rows, i = _cells(line), [], i + 2
            while i < len(lines) and lines[i].strip().startswith("|"):
                rows.append(_cells(lines[i]))
                i += 1
            out.append(_table_html(header, rows))
            continue
        if heading := re.match(r"^(#{1,6})\s+(.*)$", line):
            flush()
            level = min(len(heading.group(1)) + 1, 6)
            out.append(f"<h{level}>{_inline(heading.group(2))}</h{level}>")
        elif line:
            paragraph.append(line)
        else:
            flush()
        i += 1
    flush()
    return "\n".join(out)


# --------------------------------------------------------------------------------------------- HTML


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1a202c;background:#fff}
header{background:#017cee;color:#fff;padding:10px 20px}header a{color:#fff;margin-right:16px}
header h1{font-size:20px;margin:0 0 4px}main{padding:8px 20px 40px;max-width:1200px}
section{margin-top:24px}h2{font-size:18px;border-bottom:1px solid #e2e8f0;padding-bottom:4px}
table{border-collapse:collapse;margin:8px 0;font-size:13px}th,td{border:1px solid #e2e8f0;padding:3px 8px;
text-align:left;vertical-align:top}th{background:#f7fafc}td.num,th.num{text-align:right;
font-variant-numeric:tabular-nums}.empty{color:#718096;font-style:italic}.error{color:#c53030}
.badge{padding:1px 6px;border-radius:8px;font-size:12px;color:#fff}.ok{background:#38a169}
.warn{background:#d69e2e}.alert{background:#e53e3e}.promote{background:#38a169}.reject{background:#718096}
.chart{max-width:100%;height:auto;font-size:11px}.chart .grid{stroke:#edf2f7}.chart .frame{stroke:#a0aec0}
.chart .tick{fill:#4a5568;font-size:11px}.chart .chart-title{font-size:13px;font-weight:600}
.legend{list-style:none;padding:0;display:flex;flex-wrap:wrap;gap:4px 14px;font-size:12px;max-width:900px}
.swatch{display:inline-block;width:10px;height:10px;margin-right:4px;border-radius:2px}
.charts{display:flex;flex-wrap:wrap;gap:8px 24px}code{font-size:12px}
"""


def _page(title: str, body: str, *, root: str) -> str:
    """``root`` is the relative path back to the app root ('' or '../'), so links survive any prefix."""
    nav = "".join(
        f'<a href="{root}{href}">{label}</a>'
        for href, label in (
            ("#champions", "Champions"),
            ("#drift", "Drift"),
            ("#genres", "Genre shares"),
            ("#run", "Latest run"),
        )
    )
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f'<meta name="viewport" content="width=device-width,initial-scale=1"><style>{_CSS}</style></head>'
        f"<body><header><h1>{html.escape(title)}</h1><nav>{nav}</nav></header><main>{body}</main></body></html>"
    )


def _num(value: Any, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _when(iso: str) -> str:
    """A registry timestamp to the minute, in UTC; the exact value stays in the tooltip."""
    try:
        short = datetime.fromisoformat(iso).astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    except ValueError:
        short = iso
    return f'<span title="{html.escape(iso)}">{html.escape(short)}</span>'


def _badge(text: str, cls: str) -> str:
    return f'<span class="badge {html.escape(cls)}">{html.escape(text)}</span>'


def _table(header: Sequence[str], rows: Iterable[Sequence[str]], numeric: Sequence[int] = ()) -> str:
    """Cells are trusted HTML: callers escape values."""
    head = "".join(f"<th{' class=num' if i in numeric else ''}>{h}</th>" for i, h in enumerate(header))
    body = "".join(
        "<tr>"
        + "".join(f"<td{' class=num' if i in numeric else ''}>{c}</td>" for i, c in enumerate(r))
        + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _empty(text: str) -> str:
    return f'<p class="empty">{html.escape(text)}</p>'


def _f1_cell(metrics: dict) -> str:
    if metrics.get("macro_f1") is not None:
        return _num(metrics["macro_f1"])
    if metrics.get("f1") is not None:
        return f"{_num(metrics['f1'])} (binary F1)"
    return "–"


def _model_link(name: str, root: str) -> str:
    return f'<a href="{root}models/{html.escape(name)}">{html.escape(name)}</a>'


def render_champions(models: list[dict], moves: list[dict], root: str = "") -> str:
    if not models:
        body = _empty("No model registered yet: run the postergenre_retrain DAG (or `postergenre run`).")
    else:
        rows = []
        for m in models:
            c = m["champion"]
            if c is None:
                rows.append(
                    [
                        _model_link(m["name"], root),
                        '<span class="empty">no champion</span>',
                        "",
                        "",
                        "",
                        "",
                        str(m["versions"]),
                    ]
                )
                continue
            rows.append(
                [
                    _model_link(m["name"], root),
                    f"<code>{html.escape(c['version'])}</code>",
                    _f1_cell(c["metrics"]),
                    _num(c["metrics"]["accuracy"]),
                    _when(c["since"]),
                    html.escape(c.get("reason") or ""),
                    str(m["versions"]),
                ]
            )
        body = _table(
            [
                "Model",
                "Champion",
                "Test macro-F1",
                "Test accuracy",
                "Since",
                "Promotion decision",
                "Versions",
            ],
            rows,
            numeric=(2, 3, 6),
        )
    if moves:
        log_rows = [
            [
                _when(e["time"]),
                _model_link(e["model"], root),
                html.escape(e["action"]),
                f"<code>{html.escape(e.get('from_version') or '–')}</code>",
                f"<code>{html.escape(e['to_version'])}</code>",
                html.escape(e.get("actor") or ""),
                html.escape(e.get("reason") or ""),
            ]
            for e in moves
        ]
        body += "<h3>Alias log (newest first)</h3>" + _table(
            ["Time", "Model", "Action", "From", "To", "Actor", "Reason"], log_rows
        )
    return f'<section id="champions"><h2>Champions</h2>{body}</section>'


def render_drift(drift: dict) -> str:
    reports = drift["reports"]
    if not reports:
        return (
            '<section id="drift"><h2>Genre drift</h2>'
            + _empty("No drift report yet: drift is computed from the second snapshot on.")
            + "</section>"
        )
    order = list(dict.fromkeys(r["snapshot_id"] for r in reports))
    series_names = {
        (kind, view): f"{view} vs {kind}"
        for kind in ("previous", "champion")
        for view in ("raw", "collapsed")
    }
    colours = dict(zip(series_names.values(), ("#1f77b4", "#2ca02c", "#9467bd", "#8c564b"), strict=True))
    charts: list[str] = []
    drawn: dict[str, str] = {}  # the legend lists only series that have data
    for metric, label in (("js", "Jensen–Shannon distance"), ("psi", "PSI")):
        series: dict[str, list[float | None]] = {}
        for (kind, view), name in series_names.items():
            by_snapshot = {r["snapshot_id"]: r[f"{metric}_{view}"] for r in reports if r["kind"] == kind}
            if by_snapshot:
                series[name] = [by_snapshot.get(s) for s in order]
                drawn[name] = colours[name]
        t = drift["thresholds"][metric]
        thresholds = [Threshold("warn", t["warn"], "#d69e2e"), Threshold("alert", t["alert"], "#e53e3e")]
        charts.append(
            line_chart_svg(
                order, series, title=f"{label} per snapshot", colours=colours, thresholds=thresholds
            )
        )
    rows = [
        [
            html.escape(r["snapshot_id"]),
            html.escape(r["baseline_id"] or "–"),
            html.escape(r["kind"]),
            _badge(r["severity"], r["severity"]),
            _num(r["js_raw"]),
            _num(r["js_collapsed"]),
            _num(r["psi_raw"]),
            _num(r["psi_collapsed"]),
            html.escape("; ".join(r["reasons"])),
        ]
        for r in reversed(reports)
    ]
    latest = reports[-1]
    movers = ", ".join(
        f"{html.escape(c['genre'])} {c['change']:+.1%}"
        for c in latest["top_changes"]
        if c["change"] is not None
    )
    return (
        '<section id="drift"><h2>Genre drift</h2>'
        f"<p>Latest: snapshot <strong>{html.escape(latest['snapshot_id'])}</strong> vs "
        f"{html.escape(latest['baseline_id'] or '–')} ({html.escape(latest['kind'])}): "
        f"{_badge(latest['severity'], latest['severity'])}. Largest collapsed-share changes: {movers or '–'}.</p>"
        f'<div class="charts">{"".join(charts)}</div>{legend_html(drawn)}'
        + _table(
            [
                "Snapshot",
                "Baseline",
                "Kind",
                "Severity",
                "JS raw",
                "JS collapsed",
                "PSI raw",
                "PSI collapsed",
                "Reasons",
            ],
            rows,
            numeric=(4, 5, 6, 7),
        )
        + "</section>"
    )


def render_genres(history: dict) -> str:
    snapshots = history["snapshots"]
    if not snapshots:
        return (
            '<section id="genres"><h2>Genre shares</h2>'
            + _empty("No snapshot ingested yet: run the postergenre_monitor DAG (or `postergenre ingest`).")
            + "</section>"
        )
    ids = [s["id"] for s in snapshots]
    colours = genre_colours(history["genres"])
    charts = [
        line_chart_svg(ids, history["shares"][view], title=title, colours=colours, percent=True)
        for view, title in (
            ("raw", "Raw share of (movie, genre) rows"),
            ("collapsed", "Collapsed share of movies (one genre each)"),
        )
    ]
    last = -1
    rows = [
        [
            html.escape(g),
            str(history["counts"]["raw"][g][last]),
            _pct(history["shares"]["raw"][g][last]),
            str(history["counts"]["collapsed"][g][last]),
            _pct(history["shares"]["collapsed"][g][last]),
        ]
        for g in history["genres"]
    ]
    latest = snapshots[last]
    return (
        '<section id="genres"><h2>Genre shares</h2>'
        f"<p>{len(snapshots)} snapshot(s); latest <strong>{html.escape(latest['id'])}</strong>: "
        f"{latest['movies']} movies, {latest['rows']} genre rows, {latest['quarantined']} quarantined.</p>"
        f'<div class="charts">{"".join(charts)}</div>{legend_html(colours)}'
        f"<h3>Latest snapshot {html.escape(latest['id'])}</h3>"
        + _table(
            ["Genre", "Raw rows", "Raw share", "Collapsed movies", "Collapsed share"], rows, (1, 2, 3, 4)
        )
        + "</section>"
    )


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


def render_run(run: dict | None, runs: list[dict], root: str = "") -> str:
    if run is None:
        return (
            '<section id="run"><h2>Latest run report</h2>'
            + _empty("No run report yet: a retrain run writes runs/<run_id>/report.md when it finishes.")
            + "</section>"
        )
    report = run["report"]
    decisions = report.get("decisions") or {}
    decision_rows = [
        [
            _model_link(model, root),
            _badge("promote", "promote") if d.get("promote") else _badge("keep champion", "reject"),
            html.escape(d.get("reason") or ""),
        ]
        for model, d in sorted(decisions.items())
    ]
    others = "".join(
        f'<li><a href="{root}runs/{html.escape(r["run_id"])}">{html.escape(r["run_id"])}</a></li>'
        for r in runs
        if r["run_id"] != run["run_id"]
    )
    body = markdown_to_html(run["markdown"]) if run["markdown"] else _empty("report.md is missing.")
    return (
        f'<section id="run"><h2>Run report: {html.escape(run["run_id"])}</h2>'
        + (
            "<h3>Promotion decisions</h3>" + _table(["Model", "Decision", "Reason"], decision_rows)
            if decision_rows
            else ""
        )
        + body
        + (f"<h3>Other runs</h3><ul>{others}</ul>" if others else "")
        + "</section>"
    )


def render_model(detail: dict, root: str) -> str:
    champion = (detail["champion"] or {}).get("version")
    rows = []
    for v in reversed(detail["versions"]):
        decision = v["decision"] or {}
        verdict = ""
        if decision:
            verdict = _badge("promote", "promote") if decision.get("promote") else _badge("reject", "reject")
        rows.append(
            [
                f"<code>{html.escape(v['version'])}</code>"
                + (" ★ champion" if v["version"] == champion else ""),
                _when(v["registered_at"]),
                _f1_cell(v["headline"]),
                _num(v["headline"]["accuracy"]),
                html.escape(str(v["lineage"].get("snapshot_id", "–"))),
                html.escape(str(v["lineage"].get("run_id", "–"))),
                verdict + " " + html.escape(decision.get("reason", "")),
            ]
        )
    log_rows = [
        [
            str(e["generation"]),
            _when(e["time"]),
            html.escape(e["action"]),
            f"<code>{html.escape(e.get('from_version') or '–')}</code>",
            f"<code>{html.escape(e['to_version'])}</code>",
            html.escape(e.get("actor") or ""),
            html.escape(e.get("reason") or ""),
        ]
        for e in reversed(detail["history"])
    ]
    return (
        f'<p><a href="{root}">← overview</a></p><section><h2>Versions</h2>'
        + _table(
            ["Version", "Registered", "Test macro-F1", "Test accuracy", "Snapshot", "Run", "Decision"],
            rows,
            numeric=(2, 3),
        )
        + "</section><section><h2>Alias log</h2>"
        + (
            _table(["#", "Time", "Action", "From", "To", "Actor", "Reason"], log_rows)
            if log_rows
            else _empty("Never promoted.")
        )
        + "</section>"
    )


# --------------------------------------------------------------------------------------------- app


def _section(load: Callable[[], str], title: str) -> str:
    """Render one dashboard section; a source that fails (or holds a record this code cannot read) shows
    its error there and the rest of the page still renders: the page exists to look at when things are off."""
    try:
        return load()
    except (*_SOURCE_ERRORS, AttributeError, KeyError, TypeError, ValueError) as err:
        log.warning("dashboard section failed", section=title, error=repr(err))
        message = html.escape(f"{type(err).__name__}: {err}")
        return f'<section><h2>{html.escape(title)}</h2><p class="error">Unavailable: {message}</p></section>'


def _json(load: Callable[[], Any]) -> Any:
    try:
        return load()
    except (NotFound, registry.NotRegistered, registry.InvalidName) as err:
        raise HTTPException(404, str(err)) from err
    except _SOURCE_ERRORS as err:
        raise HTTPException(503, str(err)) from err


def _auth_dependency() -> Any:
    """Airflow's own check that a logged-in user (JWT cookie or bearer token) may use the UI at all."""
    from airflow.api_fastapi.auth.managers.models.resource_details import AccessView
    from airflow.api_fastapi.core_api.security import requires_access_view

    return Depends(requires_access_view(AccessView.WEBSITE))


def _login_url(next_url: str) -> str:
    from airflow.api_fastapi.app import get_auth_manager

    return get_auth_manager().get_url_login(next_url=next_url)


def create_app(settings: Settings | None = None) -> FastAPI:
    """The FastAPI app the plugin mounts at ``/postergenre``; ``settings`` default to the process's own."""
    app = FastAPI(
        title="postergenre monitoring",
        dependencies=[_auth_dependency()],
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )

    def conf() -> Settings:
        return settings or get_settings()

    def data_store() -> ObjectStore:
        return open_store(conf().store_url, concurrency=conf().transfer_concurrency)

    def registry_store() -> ObjectStore:
        return open_store(conf().registry_url, concurrency=conf().transfer_concurrency)

    def latest_run() -> tuple[dict | None, list[dict]]:
        store = data_store()
        runs = list_runs(store)
        return (run_report(store, runs[0]["run_id"]) if runs else None), runs

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> Any:
        """Browsers get a readable page (with the way to log in); API clients get Airflow's JSON errors."""
        if "text/html" not in request.headers.get("accept", ""):
            return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)
        hint = ""
        if exc.status_code in (401, 403):
            login = html.escape(_login_url(str(request.url)))
            hint = f'<p>Log in to Airflow first: <a href="{login}" target="_top">log in</a>.</p>'
        body = f"<h2>{exc.status_code}</h2><p>{html.escape(str(exc.detail))}</p>{hint}"
        return HTMLResponse(_page("postergenre", body, root=""), status_code=exc.status_code)

    @app.get("/", response_class=HTMLResponse)
    def dashboard() -> str:
        def run_section() -> str:
            run, runs = latest_run()
            return render_run(run, runs)

        def champions() -> str:
            store = registry_store()
            return render_champions(models_overview(store), alias_log(store))

        body = "".join(
            (
                _section(champions, "Champions"),
                _section(lambda: render_drift(drift_overview(conf())), "Genre drift"),
                _section(lambda: render_genres(genre_share_history(conf())), "Genre shares"),
                _section(run_section, "Latest run report"),
            )
        )
        return _page("postergenre: poster genres in production", body, root="")

    @app.get("/models/{name:path}", response_class=HTMLResponse)
    def model_page(name: str) -> str:
        detail = _json(lambda: model_detail(registry_store(), name))
        root = "../" * (name.count("/") + 1)
        return _page(f"postergenre model {detail['name']}", render_model(detail, root), root=root)

    @app.get("/runs/{run_id}", response_class=HTMLResponse)
    def run_page(run_id: str) -> str:
        run = _json(lambda: run_report(data_store(), run_id))
        body = '<p><a href="../">← overview</a></p>' + render_run(run, [], root="../")
        return _page(f"postergenre run {run_id}", body, root="../")

    @app.get("/api/snapshots")
    def api_snapshots(limit: int = SNAPSHOT_HISTORY_LIMIT) -> dict:
        return _json(lambda: genre_share_history(conf(), max(1, min(limit, 1000))))

    @app.get("/api/drift")
    def api_drift() -> dict:
        return _json(lambda: drift_overview(conf()))

    @app.get("/api/models")
    def api_models() -> dict:
        def load() -> dict:
            store = registry_store()
            return {"models": models_overview(store), "alias_log": alias_log(store)}

        return _json(load)

    @app.get("/api/models/{name:path}")
    def api_model(name: str) -> dict:
        return _json(lambda: model_detail(registry_store(), name))

    @app.get("/api/runs")
    def api_runs() -> dict:
        return _json(lambda: {"runs": list_runs(data_store())})

    @app.get("/api/runs/latest")
    def api_latest_run() -> dict:
        run, _ = _json(latest_run)
        if run is None:
            raise HTTPException(404, "no run report yet")
        return run

    @app.get("/api/runs/{run_id}")
    def api_run(run_id: str) -> dict:
        return _json(lambda: run_report(data_store(), run_id))

    return app

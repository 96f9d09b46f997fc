"""What the monitoring pages show, read from the metadata DB, the data store and the registry, as plain dicts.

Read-only: the DB engine never migrates (a fresh install shows as empty) and nothing is written. Stored records
come from older or newer code too, so a field that is missing, null or of another type reads as absent here
rather than failing the page; a record that is not a JSON object at all is :class:`UnreadableRecord`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from sqlalchemy import inspect
from sqlalchemy.exc import SQLAlchemyError

from postergenre import db, registry
from postergenre.config import Settings
from postergenre.genres import GENRES
from postergenre.resources import db_engine
from postergenre.steps.layout import RUNS_PREFIX, RunLayout, run_ids_with_report
from postergenre.storage import NotFound, ObjectStore, StoreError

SNAPSHOT_HISTORY_LIMIT = 100
ALIAS_LOG_ROWS = 30
_RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_T = TypeVar("_T")


class UnreadableRecord(StoreError):
    """A stored record this code cannot read (e.g. a report that is not a JSON object)."""


SOURCE_ERRORS = (StoreError, registry.RegistryError, SQLAlchemyError)


def mapping(value: Any) -> dict:
    """``value`` if it is a JSON object, else an empty one."""
    return value if isinstance(value, dict) else {}


def _sort_text(value: Any) -> str:
    """A sort key for a stored timestamp that may be missing or not a string."""
    return "" if value is None else str(value)


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


# --------------------------------------------------------------------------------------------- metadata DB


def _schema_ready(settings: Settings) -> bool:
    """A fresh install has no tables yet; the viewer shows that as empty rather than migrating (a write)."""
    return inspect(db_engine(settings, migrate=False)).has_table(db.DriftReport.__tablename__)


def genre_share_history(settings: Settings, limit: int = SNAPSHOT_HISTORY_LIMIT) -> dict:
    """Per-genre counts and shares of the last ``limit`` snapshots, oldest first, raw and collapsed.

    Raw shares are of (movie, genre) rows, collapsed shares of movies (one genre each after the collapse).
    """
    rows = []
    if _schema_ready(settings):
        with db.session_scope(db_engine(settings, migrate=False)) as session:
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


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _top_changes(report: dict, view: str = "collapsed", n: int = 5) -> list[dict]:
    per_genre = {g: mapping(row) for g, row in mapping(mapping(report.get(view)).get("per_genre")).items()}
    ranked = sorted(per_genre.items(), key=lambda kv: abs(_number(kv[1].get("change")) or 0), reverse=True)
    return [
        {"genre": g, **{k: _number(row.get(k)) for k in ("baseline_share", "current_share", "change")}}
        for g, row in ranked[:n]
    ]


def _reasons(report: dict) -> list[str]:
    reasons = report.get("reasons")
    return [str(r) for r in reasons] if isinstance(reasons, list) else []


def drift_overview(settings: Settings) -> dict:
    """Every drift report, oldest first, with the thresholds they are judged against today."""
    reports = []
    if _schema_ready(settings):
        with db.session_scope(db_engine(settings, migrate=False)) as session:
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
                "reasons": _reasons(mapping(r.report)),
                "top_changes": _top_changes(mapping(r.report)),
                "created_at": _iso(r.created_at),
                "report_uri": r.report_uri,
            }
            for r in reports
        ],
    }


# --------------------------------------------------------------------------------------------- registry


def headline_metrics(metrics: Any) -> dict:
    """Test-split accuracy and F1 of a version: macro-F1 for the multi-class CNN, F1 for a binary member."""
    test = mapping(mapping(metrics).get("test"))
    return {k: _number(test.get(k)) for k in ("accuracy", "macro_f1", "f1")}


def _model_summary(store: ObjectStore, name: str) -> dict:
    versions = registry.list_versions(store, name)
    champion = registry.get_champion(store, name)
    by_version = {v["version"]: v for v in versions}
    summary: dict[str, Any] = {"name": name, "versions": len(versions), "champion": None}
    if champion is not None:
        entry = mapping(champion.get("entry"))
        summary["champion"] = {
            "version": champion.get("version"),
            "generation": champion.get("generation"),
            "since": champion.get("since"),
            "reason": entry.get("reason"),
            "actor": entry.get("actor"),
            "metrics": headline_metrics(by_version.get(champion.get("version"), {}).get("metrics")),
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
        lambda name: [{"model": name, **mapping(e)} for e in registry.history(store, name)],
        registry.list_models(store),
    )
    entries = [e for model_log in logs for e in model_log]
    return sorted(entries, key=_move_order, reverse=True)[:limit]


def _move_order(entry: dict) -> tuple[str, str, int]:
    generation = entry.get("generation")
    return (
        _sort_text(entry.get("time")),
        str(entry["model"]),
        generation if isinstance(generation, int) else -1,
    )


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


# --------------------------------------------------------------------------------------------- run reports


def _promoted(report: dict) -> list[str]:
    return sorted(m for m, d in mapping(report.get("decisions")).items() if mapping(d).get("promote") is True)


def list_runs(store: ObjectStore) -> list[dict]:
    """Runs that have a report, newest first.

    Objects carry no timestamps in the store contract, so the order is the report's ``generated_at`` when it
    has one, then the run id (Airflow run ids start with their logical date).
    """
    run_ids = [r for r in run_ids_with_report(store.list_keys(RUNS_PREFIX)) if _RUN_ID_RE.match(r)]
    runs = []
    for run_id in run_ids:
        report = mapping(store.get_json(RunLayout(run_id).report_json))
        runs.append(
            {
                "run_id": run_id,
                "generated_at": report.get("generated_at"),
                "cnn_test": headline_metrics(report.get("cnn")),
                "promoted": _promoted(report),
            }
        )
    return sorted(runs, key=lambda r: (_sort_text(r["generated_at"]), r["run_id"]), reverse=True)


def run_report(store: ObjectStore, run_id: str) -> dict:
    """A run's report.json and report.md; NotFound when the run has no report."""
    if not _RUN_ID_RE.match(run_id):
        raise NotFound(f"no run {run_id!r}")
    layout = RunLayout(run_id)
    report = store.get_json(layout.report_json)
    if not isinstance(report, dict):
        raise UnreadableRecord(f"{layout.report_json} is a JSON {type(report).__name__}, not an object")
    try:
        markdown = store.get_bytes(layout.report_md).decode()
    except NotFound:
        markdown = ""
    return {"run_id": run_id, "report": report, "markdown": markdown}


def latest_run(store: ObjectStore) -> tuple[dict | None, list[dict]]:
    """The newest run's report (None before the first) and every run with a report, newest first."""
    runs = list_runs(store)
    return (run_report(store, runs[0]["run_id"]) if runs else None), runs

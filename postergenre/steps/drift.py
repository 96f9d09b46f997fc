"""Stage ``drift``: genre-distribution drift of a snapshot against a baseline, stored and recorded."""

from __future__ import annotations

from postergenre import db
from postergenre.config import Settings, get_settings
from postergenre.drift import DriftThresholds, drift_report
from postergenre.resources import data_store, db_engine
from postergenre.snapshots import load_manifest


def _drift_input(manifest: dict) -> dict:
    return {**manifest["genres"], "movies": manifest["counts"]["movies"]}


def compute_drift(
    snapshot_id: str,
    *,
    baseline_id: str | None = None,
    kind: str = "previous",
    settings: Settings | None = None,
) -> dict:
    """Genre drift of ``snapshot_id`` against ``baseline_id`` (default: the previously ingested snapshot).

    The full report is always stored, in the store and the DB, whatever its severity. With no baseline at all
    (the first snapshot) the result says so instead of failing.
    """
    settings = settings or get_settings()
    store = data_store(settings)
    manifest = load_manifest(store, snapshot_id)
    engine = db_engine(settings)
    if baseline_id is None:
        with db.session_scope(engine) as session:
            previous = db.previous_snapshot(session, snapshot_id)
            baseline_id = previous.id if previous is not None else None
    if baseline_id is None:
        return {
            "snapshot_id": snapshot_id,
            "baseline_id": None,
            "severity": "ok",
            "note": "no earlier snapshot to compare with",
        }
    baseline = load_manifest(store, baseline_id)
    report = drift_report(
        _drift_input(manifest),
        _drift_input(baseline),
        DriftThresholds.from_settings(settings),
        snapshot_id=snapshot_id,
        baseline_id=baseline_id,
    )
    key = f"drift/{snapshot_id}/{kind}-{baseline_id}.json"
    store.put_json(key, report)
    report_uri = f"{store.url.rstrip('/')}/{key}"
    with db.session_scope(engine) as session:
        db.record_drift(
            session,
            snapshot_id=snapshot_id,
            baseline_id=baseline_id,
            kind=kind,
            severity=report["severity"],
            js_raw=report["raw"]["js_distance"],
            js_collapsed=report["collapsed"]["js_distance"],
            psi_raw=report["raw"]["psi"],
            psi_collapsed=report["collapsed"]["psi"],
            report=report,
            report_uri=report_uri,
        )
    return {**report, "report_uri": report_uri}

"""The data-plane steps as plain functions, shared by the CLI and the Airflow DAGs.

Each step takes explicit inputs (a source, a snapshot id, a seed) plus ``Settings``, does its work against the
configured store and metadata DB, and returns a small JSON-able dict (ids, URIs, counts): never data.
"""

from __future__ import annotations

from functools import lru_cache

from postergenre import db
from postergenre.config import Settings, get_settings
from postergenre.datasets import dataset_prefix, write_dataset
from postergenre.drift import DriftThresholds, drift_report
from postergenre.labels import prepare_labels
from postergenre.progress import Progress
from postergenre.snapshots import ingest, load_manifest, load_rows, snapshot_key
from postergenre.storage import ObjectStore, open_store


def data_store(settings: Settings) -> ObjectStore:
    return open_store(settings.store_url, concurrency=settings.transfer_concurrency)


@lru_cache(maxsize=8)
def _engine_for(db_url: str):
    """One engine (connection pool) per DB URL per process, migrated once; workers run many steps."""
    engine = db.make_engine(db_url)
    db.upgrade(engine)
    return engine


def _engine(settings: Settings):
    return _engine_for(settings.db_url)


def ingest_snapshot(
    source: str,
    *,
    snapshot_id: str | None = None,
    settings: Settings | None = None,
    progress: Progress | None = None,
) -> dict:
    """Validate and publish ``source`` as a snapshot, and record it in the metadata DB."""
    settings = settings or get_settings()
    store = data_store(settings)
    result = ingest(
        source, store, snapshot_id=snapshot_id, progress=progress, concurrency=settings.transfer_concurrency
    )
    manifest = load_manifest(store, result["snapshot_id"])
    engine = _engine(settings)
    with db.session_scope(engine) as session:
        db.record_snapshot(
            session,
            id=manifest["snapshot_id"],
            source=manifest["source"],
            content_hash=manifest["content_hash"],
            movies=manifest["counts"]["movies"],
            rows=manifest["counts"]["rows"],
            posters=manifest["counts"]["posters"],
            quarantined=manifest["counts"]["quarantined"],
            manifest_uri=f"{store.url.rstrip('/')}/{snapshot_key(manifest['snapshot_id'], 'manifest.json')}",
            genre_counts_raw=manifest["genres"]["raw"],
            genre_counts_collapsed=manifest["genres"]["collapsed"],
        )
    return result


def prepare_dataset(snapshot_id: str, *, seed: int | None = None, settings: Settings | None = None) -> dict:
    """The report's label processing for a published snapshot, stored under ``datasets/<snapshot>/``."""
    settings = settings or get_settings()
    seed = settings.seed if seed is None else seed
    store = data_store(settings)
    manifest = load_manifest(store, snapshot_id)
    prepared = prepare_labels(load_rows(store, snapshot_id), seed)
    description = write_dataset(store, snapshot_id, prepared, input_hash=manifest["content_hash"])
    with db.session_scope(_engine(settings)) as session:
        db.record_dataset(
            session,
            snapshot_id=snapshot_id,
            seed=seed,
            content_hash=manifest["content_hash"],
            uri=description["uri"],
            counts=description["counts"],
        )
    return {
        "snapshot_id": snapshot_id,
        "seed": seed,
        "uri": description["uri"],
        "classes": description["classes"],
        "movies": description["movies"],
        "per_class": {split: next(iter(c.values()), 0) for split, c in description["counts"].items()},
        "prefix": dataset_prefix(snapshot_id, seed),
    }


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
    engine = _engine(settings)
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

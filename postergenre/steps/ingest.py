"""Stage ``ingest``: validate an export, publish it as an immutable snapshot, record it in the metadata DB.

The store and the DB must never disagree for long: the DB is opened and probed before anything is published
(a malformed ``POSTERGENRE_DB_URL`` fails with nothing written), and a failure to record after publishing is
recoverable: the same ingest again finds the snapshot unchanged and records it.
"""

from __future__ import annotations

from postergenre import db
from postergenre.config import Settings, get_settings
from postergenre.limits import Limits
from postergenre.progress import Progress
from postergenre.resources import data_store, db_engine
from postergenre.snapshots import ingest, load_manifest, snapshot_key


def _open_db(settings: Settings):
    """The migrated engine, known to answer; :class:`db.DBError` otherwise."""
    with db.db_errors(f"cannot use the metadata DB {db.describe_url(settings.db_url)}"):
        engine = db_engine(settings)
    db.check_connection(engine)
    return engine


def record(engine, store, snapshot_id: str) -> None:
    """Record the published snapshot ``snapshot_id`` (idempotent: a no-op if it is recorded already)."""
    manifest = load_manifest(store, snapshot_id)
    where = f"snapshot {snapshot_id} is published in the store but not recorded in the metadata DB"
    with db.db_errors(f"{where} (re-run the same ingest to record it)"), db.session_scope(engine) as session:
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
    engine = _open_db(settings)
    result = ingest(
        source,
        store,
        snapshot_id=snapshot_id,
        progress=progress,
        concurrency=settings.transfer_concurrency,
        limits=Limits.from_settings(settings),
        stale_after=settings.stale_temp_seconds,
    )
    record(engine, store, result["snapshot_id"])
    return result

"""Stage ``ingest``: validate an export, publish it as an immutable snapshot, record it in the metadata DB."""

from __future__ import annotations

from postergenre import db
from postergenre.config import Settings, get_settings
from postergenre.progress import Progress
from postergenre.resources import data_store, db_engine
from postergenre.snapshots import ingest, load_manifest, snapshot_key


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
    with db.session_scope(db_engine(settings)) as session:
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

"""Stage ``prepare``: the report's label processing of a published snapshot, under ``datasets/<snapshot>/``."""

from __future__ import annotations

from postergenre import db
from postergenre.config import Settings, get_settings
from postergenre.datasets import dataset_prefix, write_dataset
from postergenre.labels import prepare_labels
from postergenre.resources import data_store, db_engine
from postergenre.snapshots import load_manifest, load_rows


def prepare_dataset(snapshot_id: str, *, seed: int | None = None, settings: Settings | None = None) -> dict:
    """Collapse, balance, split and one-hot a published snapshot; recorded in the metadata DB."""
    settings = settings or get_settings()
    seed = settings.seed if seed is None else seed
    store = data_store(settings)
    manifest = load_manifest(store, snapshot_id)
    prepared = prepare_labels(load_rows(store, snapshot_id), seed)
    description = write_dataset(store, snapshot_id, prepared, input_hash=manifest["content_hash"])
    with db.session_scope(db_engine(settings)) as session:
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

"""Stage ``prepare``: the report's label processing of a published snapshot, under ``datasets/<snapshot>/``."""

from __future__ import annotations

from postergenre import db
from postergenre.config import Settings, get_settings
from postergenre.datasets import dataset_prefix, write_dataset
from postergenre.labels import check_balance, prepare_labels
from postergenre.resources import data_store, db_engine
from postergenre.snapshots import load_manifest, load_rows


def prepare_dataset(
    snapshot_id: str,
    *,
    seed: int | None = None,
    balance: str = "undersample",
    settings: Settings | None = None,
) -> dict:
    """Collapse, balance, split and one-hot a published snapshot (``labels.prepare_labels``).

    ``balance``: ``undersample`` (the report's) or ``weighted`` (every labelled movie in train, with class
    weights; same val and test). A snapshot below the minimums (``labels.check_minimums``) raises
    ValueError before anything is written. The metadata DB's datasets table is keyed by (snapshot, seed)
    alone, so only ``undersample`` datasets are recorded there; a ``weighted`` one is described by its
    ``dataset.json`` (which records its balance).
    """
    settings = settings or get_settings()
    seed = settings.seed if seed is None else seed
    check_balance(balance)
    store = data_store(settings)
    manifest = load_manifest(store, snapshot_id)
    prepared = prepare_labels(load_rows(store, snapshot_id), seed, balance)
    description = write_dataset(store, snapshot_id, prepared, input_hash=manifest["content_hash"])
    with db.session_scope(db_engine(settings)) as session:
        db.record_dataset(
            session,
            snapshot_id=snapshot_id,
            seed=seed,
            balance=balance,
            content_hash=manifest["content_hash"],
            uri=description["uri"],
            counts=description["counts"],
        )
    return {
        "snapshot_id": snapshot_id,
        "seed": seed,
        "balance": balance,
        "uri": description["uri"],
        "classes": description["classes"],
        "movies": description["movies"],
        "labelled_movies": description["labelled_movies"],
        # Movies per class in each split; for weighted train, the rarest class's (the others have more).
        "per_class": {split: min(c.values(), default=0) for split, c in description["counts"].items()},
        "prefix": dataset_prefix(snapshot_id, seed, balance),
    }

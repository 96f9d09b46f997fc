"""Stage ``start``: record a run's settings under ``runs/<id>/config.json`` once its inputs exist."""

from __future__ import annotations

from postergenre import registry
from postergenre.config import Settings, get_settings
from postergenre.datasets import load_dataset_description
from postergenre.resources import data_store
from postergenre.run_settings import RunSettings
from postergenre.snapshots import load_manifest
from postergenre.steps.layout import RunLayout
from postergenre.storage import NotFound


def start_run(run_id: str, config: RunSettings, settings: Settings | None = None) -> dict:
    """Record the run's settings. Re-running with the same settings is a no-op; other settings are an error.

    ``config`` is already validated (a :class:`RunSettings`), so nothing invalid is ever written.
    """
    settings = settings or get_settings()
    run_id = registry.run_version_id(run_id)
    store = data_store(settings)
    load_manifest(store, config.snapshot_id)
    load_dataset_description(store, config.snapshot_id, config.seed, config.balance)
    layout = RunLayout(run_id)
    try:
        existing = RunSettings.from_stored(store.get_json(layout.config))
    except NotFound:
        existing = None
    if existing is not None and existing != config:
        raise ValueError(f"run {run_id} already exists with another configuration; use a new run id")
    if existing is None:
        store.put_json(layout.config, config.to_dict())
    return {"run_id": run_id, "config": config.to_dict(), "uri": f"{store.url.rstrip('/')}/{layout.root}"}

"""Registered model versions on local disk: downloaded once (verified against their registered digests) into
``<home>/cache/models/<name>/<version>/`` and loaded from there, for evaluation and serving alike."""

from __future__ import annotations

from pathlib import Path

from postergenre import registry
from postergenre.config import Settings
from postergenre.storage import ObjectStore


def local_version(registry_store: ObjectStore, name: str, version: str, settings: Settings) -> Path:
    """The folder holding ``version`` of ``name``; downloaded on first use."""
    local = settings.home / "cache" / "models" / registry.model_key(name) / version
    if not (local / "model.keras").exists():
        registry.download_version(registry_store, name, version, local)
    return local


def load_version_model(registry_store: ObjectStore, name: str, version: str, settings: Settings):
    """The registered ``model.keras`` of a version, uncompiled (inference only)."""
    import keras

    return keras.models.load_model(
        local_version(registry_store, name, version, settings) / "model.keras", compile=False
    )

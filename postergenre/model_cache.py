"""Registered model versions on local disk: downloaded once (verified against their registered digests) into
``<home>/cache/models/<name>/<version>/`` and loaded from there, for evaluation and serving alike."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from pathlib import Path

from postergenre import registry
from postergenre.config import Settings
from postergenre.storage import ObjectStore


def local_version(registry_store: ObjectStore, name: str, version: str, settings: Settings) -> Path:
    """The folder holding ``version`` of ``name``; downloaded on first use.

    Downloaded into a private folder and renamed into place only once every digest matched, so a failed or
    concurrent download never leaves a half-written or tampered model where the next load would trust it.
    """
    local = settings.home / "cache" / "models" / registry.model_key(name) / version
    if not (local / "model.keras").exists():
        shutil.rmtree(local, ignore_errors=True)  # a folder without model.keras is a leftover, never complete
        local.parent.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(prefix=f".{version}.partial-", dir=local.parent))
        try:
            registry.download_version(registry_store, name, version, partial)
            with contextlib.suppress(OSError):  # another process won the race: its copy is as good
                partial.rename(local)
        finally:
            shutil.rmtree(partial, ignore_errors=True)
    return local


def load_version_model(registry_store: ObjectStore, name: str, version: str, settings: Settings):
    """The registered ``model.keras`` of a version, uncompiled (inference only)."""
    import keras

    return keras.models.load_model(
        local_version(registry_store, name, version, settings) / "model.keras", compile=False
    )

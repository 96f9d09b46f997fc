"""Prediction with the champion models: the single CNN (top genres) or the OvA ensemble (multi-label).

Champions are downloaded from the registry once into ``<home>/cache/models/<name>/<version>/`` (verified against
their registered digests) and loaded from there, so repeated predictions do not re-download.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from postergenre import registry
from postergenre.config import Settings, get_settings
from postergenre.genres import GENRES
from postergenre.storage import open_store

CNN = "genre-cnn"
OVA = "genre-ova"


class NoChampion(LookupError):
    """There is no champion to predict with (nothing promoted yet)."""


def _load_champion(settings: Settings, name: str):
    import keras

    store = open_store(settings.registry_url)
    champion = registry.get_champion(store, name)
    if champion is None:
        return None
    version = champion["version"]
    local = settings.home / "cache" / "models" / registry.model_key(name) / version
    if not (local / "model.keras").exists():
        registry.download_version(store, name, version, local)
    model = keras.models.load_model(local / "model.keras", compile=False)
    info = registry.show_version(store, name, version)
    return model, version, info


def _images(paths: list[Path], image_size: int) -> np.ndarray:
    from postergenre.images import load_image

    return np.stack([load_image(p, image_size) for p in paths])


def predict_posters(
    paths: list[Path], *, model: str = CNN, top_k: int = 3, settings: Settings | None = None
) -> dict:
    """Genres of each poster. ``genre-cnn``: the top ``top_k`` genres with probabilities. ``genre-ova``: every
    genre whose member's probability clears its threshold (chosen on validation), plus the argmax genre."""
    settings = settings or get_settings()
    for path in paths:
        if not Path(path).is_file():
            raise FileNotFoundError(f"poster {path} does not exist")
    if model == CNN:
        loaded = _load_champion(settings, CNN)
        if loaded is None:
            raise NoChampion("no genre-cnn champion in the registry yet: run a retrain first")
        keras_model, version, info = loaded
        classes = info["metrics"]["test"]["classes"]
        proba = keras_model.predict(_images(paths, int(keras_model.input_shape[1])), verbose=0)
        results = []
        for path, row in zip(paths, proba, strict=True):
            order = np.argsort(-row)[:top_k]
            results.append(
                {
                    "poster": str(path),
                    "genres": [{"genre": classes[i], "probability": round(float(row[i]), 4)} for i in order],
                }
            )
        return {"model": CNN, "version": version, "predictions": results}
    if model != OVA:
        raise ValueError(f"unknown model {model!r}: use {CNN!r} or {OVA!r}")
    members = {}
    for genre in GENRES:
        loaded = _load_champion(settings, registry.ova_model_name(genre))
        if loaded is not None:
            members[genre] = loaded
    if not members:
        raise NoChampion("no genre-ova member has a champion yet: run a retrain first")
    image_size = int(next(iter(members.values()))[0].input_shape[1])
    images = _images(paths, image_size)
    scores = {g: m.predict(images, verbose=0)[:, 0] for g, (m, _, _) in members.items()}
    thresholds = {g: float(info["metrics"].get("threshold", 0.5)) for g, (_, _, info) in members.items()}
    results = []
    for i, path in enumerate(paths):
        probs = {g: float(s[i]) for g, s in scores.items()}
        labels = sorted((g for g, p in probs.items() if p > thresholds[g]), key=lambda g: -probs[g])
        results.append(
            {
                "poster": str(path),
                "genres": [
                    {"genre": g, "probability": round(probs[g], 4), "threshold": round(thresholds[g], 4)}
                    for g in labels
                ],
                "argmax": max(probs, key=probs.get),
            }
        )
    return {
        "model": OVA,
        "versions": {g: v for g, (_, v, _) in members.items()},
        "members": len(members),
        "predictions": results,
    }

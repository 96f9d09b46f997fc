"""Prediction with the champion models: the single CNN (top genres) or the OvA ensemble (multi-label).

Champions are downloaded from the registry once into ``<home>/cache/models/<name>/<version>/`` (verified against
their registered digests, see ``model_cache``) and loaded from there, so repeated predictions do not re-download.

Bad posters. Each poster is checked on its own (``images.check_poster``: file, size, header, pixels cap; then
the decode) and one that fails gets an ``error`` in its row instead of genres: the others are still predicted,
and ``failed`` counts the bad ones (the CLI then exits with a known-failure code). The checks that need no
decode run before any model is loaded, so a batch of posters that all fail them fails fast, champion or not.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from postergenre import registry
from postergenre.calibration import (
    ARGMAX_VAL_FILE,
    IDENTITY,
    Platt,
    apply_platt,
    fit_joint_members,
    read_argmax_val,
)
from postergenre.config import Settings, get_settings
from postergenre.genres import CNN_MODEL, GENRES, OVA_MODEL_PREFIX
from postergenre.provenance import serving_key
from postergenre.storage import ObjectStore, StoreError, open_store

CNN = CNN_MODEL
OVA = OVA_MODEL_PREFIX
MODELS = (CNN, OVA)


class NoChampion(LookupError):
    """There is no champion to predict with (nothing promoted yet)."""


class ServingError(RuntimeError):
    """A champion that cannot serve (its model or metrics are unusable); the message names the version."""


@dataclass(frozen=True)
class Champion:
    model: Any
    version: str
    metrics: dict
    signature: dict | None = None
    """``signature.json`` of the version (None for versions registered before signatures)."""
    argmax_val: tuple | None = None
    """An OvA member's validation rows (``calibration.ARGMAX_VAL_FILE``), for the joint argmax calibration."""

    @property
    def image_size(self) -> int:
        return int(self.model.input_shape[1])


def _load_champion(store: ObjectStore, settings: Settings, name: str) -> Champion | None:
    from postergenre.model_cache import load_version_model, local_version

    champion = registry.get_champion(store, name)
    if champion is None:
        return None
    version = champion["version"]
    metrics = registry.show_version(store, name, version)["metrics"]
    try:
        model = load_version_model(store, name, version, settings)
        folder = local_version(store, name, version, settings)
        signature = _signature(folder, name, version)
        argmax_val = _argmax_val(folder, name, version)
    except (registry.RegistryError, StoreError):  # already one-line errors that name what failed
        raise
    except Exception as exc:  # Keras raises ValueError, OSError, zipfile errors, ... for a broken .keras file
        detail = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise ServingError(f"{name} {version}: model.keras cannot be loaded ({detail})") from None
    return Champion(model, version, metrics, signature, argmax_val)


def _argmax_val(folder: Path, name: str, version: str) -> tuple | None:
    path = folder / ARGMAX_VAL_FILE
    if not path.exists():
        return None
    try:
        return read_argmax_val(path.read_bytes())
    except ValueError as exc:
        raise ServingError(f"{name} {version}: {ARGMAX_VAL_FILE} is unusable ({exc})") from None


def argmax_calibrations(members: dict[str, tuple[str, Champion]]) -> tuple[str, dict[str, Platt]]:
    """How the ensemble's argmax reads each member: vector scaling fitted jointly on the members' validation rows
    when every member carries them for the same movies (members of one run), else each member's own Platt
    calibration (identity for versions registered without one)."""
    rows = {g: c.argmax_val for g, (_, c) in members.items()}
    if all(r is not None for r in rows.values()):
        joint = fit_joint_members(rows)
        if joint is not None:
            return "vector-scaling", joint
    platt = {
        g: Platt.from_dict(c.metrics["calibration"]) if "calibration" in c.metrics else IDENTITY
        for g, (_, c) in members.items()
    }
    return "platt", platt


def _signature(folder: Path, name: str, version: str) -> dict | None:
    import json

    path = folder / "signature.json"
    if not path.exists():
        return None
    try:
        signature = json.loads(path.read_text())
        serving_key(signature)
    except (ValueError, KeyError, TypeError) as exc:
        raise ServingError(f"{name} {version}: signature.json is unusable ({exc})") from None
    return signature


def _serving_key(champion: Champion) -> tuple:
    """What must agree across the OvA members; an old version without a signature has only its input size."""
    if champion.signature is None:
        return (champion.image_size,)
    return serving_key(champion.signature)


def _same_signature(members: dict[str, tuple[str, Champion]]) -> None:
    """The ensemble scores one poster tensor with every member: refuse members that expect different ones."""
    keys = {g: _serving_key(c) for g, (_, c) in members.items()}
    if len(set(keys.values())) > 1:
        groups: dict[tuple, list[str]] = {}
        for genre, key in keys.items():
            groups.setdefault(key, []).append(f"{genre} {members[genre][1].version}")
        described = "; ".join(f"{', '.join(names)}: {key}" for key, names in groups.items())
        raise ServingError(
            "genre-ova members expect different inputs (image size, preprocessing, backbone, weights), so one "
            f"poster tensor cannot serve them all: {described}; promote members of one run or roll back"
        )


def _classes(champion: Champion, outputs: int) -> list[str]:
    """The genre of each output unit, as recorded in the version's metrics."""
    test = champion.metrics.get("test")
    classes = test.get("classes") if isinstance(test, dict) else None
    if (
        not isinstance(classes, list)
        or len(classes) != outputs
        or not all(isinstance(c, str) for c in classes)
    ):
        raise ServingError(
            f"{CNN} {champion.version}: metrics.json has no list of {outputs} class names under test.classes"
        )
    return classes


def _threshold(champion: Champion, name: str) -> float:
    """The multi-label threshold chosen on val's true genre lists, else the member's own F1 threshold."""
    value = champion.metrics.get("multilabel_threshold", champion.metrics.get("threshold", 0.5))
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        raise ServingError(
            f"{name} {champion.version}: metrics.json threshold {value!r} is not a probability"
        )
    return float(value)


def _check_all(paths: list[Path], settings: Settings) -> dict[int, str]:
    """Position -> one-line error for every poster that fails the checks before decoding."""
    from postergenre.image_checks import PosterError, check_poster  # no TensorFlow: bad posters fail fast

    errors = {}
    for i, path in enumerate(paths):
        try:
            check_poster(path, max_pixels=settings.max_image_pixels, max_bytes=settings.max_poster_bytes)
        except PosterError as exc:
            errors[i] = str(exc)
    return errors


def _decode(paths: list[Path], keep: list[int], image_size: int, settings: Settings, errors: dict[int, str]):
    """Letterboxed arrays of the posters at ``keep`` that decode; failures go to ``errors``."""
    from postergenre.images import PosterError, load_image

    decoded, images = [], []
    for i in keep:
        try:
            images.append(
                load_image(
                    paths[i],
                    image_size,
                    max_pixels=settings.max_image_pixels,
                    max_bytes=settings.max_poster_bytes,
                )
            )
            decoded.append(i)
        except PosterError as exc:
            errors[i] = str(exc)
    return decoded, (np.stack(images) if images else None)


def _rows(paths: list[Path], predicted: dict[int, dict], errors: dict[int, str]) -> list[dict]:
    return [
        predicted[i] if i in predicted else {"poster": str(p), "genres": [], "error": errors[i]}
        for i, p in enumerate(paths)
    ]


def predict_posters(
    paths: list[Path], *, model: str = CNN, top_k: int = 3, settings: Settings | None = None
) -> dict:
    """Genres of each poster. ``genre-cnn``: the top ``top_k`` genres with probabilities. ``genre-ova``: every
    genre whose member's probability clears its threshold (chosen on validation), plus the argmax genre.

    A poster that cannot be used has ``error`` (one line) and no genres in its row; ``failed`` counts them.
    """
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}: use {CNN!r} or {OVA!r}")
    settings = settings or get_settings()
    paths = [Path(p) for p in paths]
    errors = _check_all(paths, settings)
    keep = [i for i in range(len(paths)) if i not in errors]
    if not keep:  # nothing to predict: no need for (or error about) a model
        return {"model": model, "predictions": _rows(paths, {}, errors), "failed": len(errors)}
    store = open_store(settings.registry_url)
    if model == CNN:
        return _predict_cnn(store, settings, paths, keep, errors, top_k)
    return _predict_ova(store, settings, paths, keep, errors)


def _predict_cnn(store, settings, paths, keep, errors, top_k) -> dict:
    champion = _load_champion(store, settings, CNN)
    if champion is None:
        raise NoChampion("no genre-cnn champion in the registry yet: run a retrain first")
    decoded, images = _decode(paths, keep, champion.image_size, settings, errors)
    predicted = {}
    if images is not None:
        proba = champion.model.predict(images, verbose=0)
        classes = _classes(champion, proba.shape[1])
        for i, row in zip(decoded, proba, strict=True):
            order = np.argsort(-row)[:top_k]
            predicted[i] = {
                "poster": str(paths[i]),
                "genres": [{"genre": classes[j], "probability": round(float(row[j]), 4)} for j in order],
            }
    return {
        "model": CNN,
        "version": champion.version,
        "predictions": _rows(paths, predicted, errors),
        "failed": len(errors),
    }


def _predict_ova(store, settings, paths, keep, errors) -> dict:
    members = {}
    for genre in GENRES:
        name = registry.ova_model_name(genre)
        if (loaded := _load_champion(store, settings, name)) is not None:
            members[genre] = (name, loaded)
    if not members:
        raise NoChampion("no genre-ova member has a champion yet: run a retrain first")
    _same_signature(members)
    image_size = next(iter(members.values()))[1].image_size
    thresholds = {g: _threshold(c, name) for g, (name, c) in members.items()}
    method, calibrations = argmax_calibrations(members)
    decoded, images = _decode(paths, keep, image_size, settings, errors)
    predicted = {}
    if images is not None:
        scores = {g: c.model.predict(images, verbose=0)[:, 0] for g, (_, c) in members.items()}
        for k, i in enumerate(decoded):
            probs = {g: float(s[k]) for g, s in scores.items()}
            labels = sorted((g for g, p in probs.items() if p > thresholds[g]), key=lambda g: -probs[g])
            predicted[i] = {
                "poster": str(paths[i]),
                "genres": [
                    {"genre": g, "probability": round(probs[g], 4), "threshold": round(thresholds[g], 4)}
                    for g in labels
                ],
                # calibrated on val, so members with different base rates compare like with like
                "argmax": max(probs, key=lambda g: float(apply_platt(np.array([probs[g]]), calibrations[g])[0])),
                "argmax_calibration": method,
            }
    return {
        "model": OVA,
        "versions": {g: c.version for g, (_, c) in members.items()},
        "members": len(members),
        "predictions": _rows(paths, predicted, errors),
        "failed": len(errors),
    }

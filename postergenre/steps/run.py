"""The whole model plane of one run in-process (what the DAG fans out): for the demo, tests and one-off runs."""

from __future__ import annotations

import time

from postergenre.config import Settings, get_settings
from postergenre.genres import CNN_MODEL, GENRES
from postergenre.run_settings import RunSettings
from postergenre.steps.context import load_run
from postergenre.steps.embed import embed_step
from postergenre.steps.evaluate import evaluate_step
from postergenre.steps.finetune import fine_tune_step
from postergenre.steps.promote import promote_step
from postergenre.steps.report import report_step
from postergenre.steps.start import start_run
from postergenre.steps.train import train_step
from postergenre.steps.tune import run_tuning, select_step


def all_targets(classes: list[str]) -> list[str]:
    """``genre-cnn`` and one OvA member per class present in the dataset."""
    return [CNN_MODEL, *[g for g in GENRES if g in classes]]


def run_targets(run_id: str, settings: Settings | None = None) -> list[str]:
    """What a started run trains by default: ``all_targets`` of its dataset."""
    return all_targets(load_run(run_id, settings).classes)


def run_retrain(
    run_id: str,
    config: RunSettings,
    *,
    actor: str = "postergenre run",
    settings: Settings | None = None,
    targets: list[str] | None = None,
) -> dict:
    """start -> embed -> tune -> train -> [fine-tune] -> evaluate -> promote -> report, one after the other."""
    settings = settings or get_settings()
    started = time.perf_counter()
    run_id = start_run(run_id, config, settings)["run_id"]
    embedded = embed_step(run_id, settings)
    trials = run_tuning(run_id, settings)
    best = select_step(run_id, settings)
    targets = targets or run_targets(run_id, settings)
    trained = [train_step(run_id, t, settings) for t in targets]
    fine_tuned = fine_tune_step(run_id, settings) if CNN_MODEL in targets else None
    decisions = [evaluate_step(run_id, t, settings) for t in targets]
    promoted = [promote_step(run_id, t, actor=actor, settings=settings) for t in targets]
    report = report_step(run_id, settings)
    return {
        "run_id": run_id,
        "feature_key": embedded["feature_key"],
        "trials": len(trials),
        "best": best,
        "trained": len(trained),
        "fine_tuned": bool(fine_tuned and fine_tuned["fine_tuned"]),
        "promoted": [p["model"] for p in promoted if p["promoted"]],
        "kept": [d["model"] for d in decisions if not d["promote"]],
        "report": report,
        "seconds": round(time.perf_counter() - started, 1),
    }

"""The model-plane commands of ``postergenre``: tune, train, evaluate, promote, run and demo.

Their run options are derived from :class:`postergenre.run_settings.RunSettings` (``cli_options``), so they
accept and refuse exactly what the DAG's trigger form does.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from postergenre.cli import JsonFlag, _progress, _run, app
from postergenre.cli_options import SettingsFor, run_settings_options
from postergenre.config import get_settings
from postergenre.run_settings import FORM_FIELDS

Target = Annotated[
    list[str] | None,
    typer.Option(
        "--target", help="genre-cnn or a genre name (repeatable; default: genre-cnn and every OvA member)."
    ),
]


def _targets(run_id: str, targets: list[str] | None) -> list[str]:
    from postergenre.steps.run import run_targets

    return targets or run_targets(run_id)


@app.command()
@run_settings_options(include=[f for f in FORM_FIELDS if f != "dry_run"])
def tune(
    snapshot: Annotated[str, typer.Argument(help="Prepared snapshot id.")],
    run_id: Annotated[
        str, typer.Option(help="Run id (outputs go to runs/<id>/; reruns skip finished trials).")
    ],
    as_json: JsonFlag = False,
    *,
    settings_for: SettingsFor,
) -> None:
    """Start a run: embed the posters once, then run the planned trials and select the best."""
    from postergenre.steps.embed import embed_step
    from postergenre.steps.start import start_run
    from postergenre.steps.tune import planned_trials, run_tuning, select_step

    def step():
        run = start_run(run_id, settings_for(snapshot))["run_id"]
        embedded = embed_step(run)
        with _progress().task("tuning trials", planned_trials(run)) as advance:
            results = run_tuning(run, on_trial=lambda _: advance(1))
        return {"run_id": run, "feature_key": embedded["feature_key"], "trials": results, "best": select_step(run)}

    _run(as_json, step)


@app.command()
def train(
    run_id: Annotated[str, typer.Argument(help="A tuned run.")],
    target: Target = None,
    as_json: JsonFlag = False,
) -> None:
    """Train the multi-class CNN and/or OvA members with the run's best hyperparameters (resumes checkpoints);
    then the fine-tune stage of genre-cnn when the run was started with --fine-tune."""
    from postergenre.genres import CNN_MODEL
    from postergenre.steps.finetune import fine_tune_step
    from postergenre.steps.train import train_step

    def step():
        targets = _targets(run_id, target)
        out = []
        with _progress().task("training", len(targets)) as advance:
            for name in targets:
                out.append(train_step(run_id, name))
                advance(1)
        fine_tuned = fine_tune_step(run_id) if CNN_MODEL in targets else None
        return {"run_id": run_id, "trained": out, "fine_tune": fine_tuned}

    _run(as_json, step)


@app.command()
def evaluate(
    run_id: Annotated[str, typer.Argument(help="A trained run.")],
    target: Target = None,
    as_json: JsonFlag = False,
) -> None:
    """Score each challenger against its champion on the same test split; write every decision and the report."""
    from postergenre.steps.evaluate import evaluate_step
    from postergenre.steps.report import report_step

    def step():
        decisions = [evaluate_step(run_id, name) for name in _targets(run_id, target)]
        return {"run_id": run_id, "decisions": decisions, "report": report_step(run_id)}

    _run(as_json, step)


@app.command()
def promote(
    run_id: Annotated[str, typer.Argument(help="An evaluated run.")],
    target: Target = None,
    force: Annotated[
        bool, typer.Option("--force", help="Promote even against the decision (audited).")
    ] = False,
    reason: Annotated[str, typer.Option(help="Why (required with --force; goes to the alias log).")] = "",
    actor: Annotated[str, typer.Option(help="Who promotes (alias log).")] = "cli",
    as_json: JsonFlag = False,
) -> None:
    """Register each candidate and move its champion pointer when the decision (or --force) says so."""
    from postergenre.steps.promote import promote_step

    _run(
        as_json,
        lambda: {
            "run_id": run_id,
            "results": [
                promote_step(run_id, name, actor=actor, force=force, force_reason=reason)
                for name in _targets(run_id, target)
            ],
        },
    )


@app.command("run")
@run_settings_options()
def run_cmd(
    snapshot: Annotated[str | None, typer.Option(help="A published snapshot to train on.")] = None,
    source: Annotated[
        str | None, typer.Option(help="Or an export to ingest first (folder, archive, s3://).")
    ] = None,
    run_id: Annotated[
        str | None, typer.Option(help="Run id (default: derived from the snapshot and time).")
    ] = None,
    target: Target = None,
    as_json: JsonFlag = False,
    *,
    settings_for: SettingsFor,
) -> None:
    """The whole retrain in-process: ingest (with --source), prepare, embed, tune, train, evaluate, promote, report."""
    from datetime import UTC, datetime

    from postergenre.steps.ingest import ingest_snapshot
    from postergenre.steps.prepare import prepare_dataset
    from postergenre.steps.run import run_retrain

    if not (snapshot or source):
        raise typer.BadParameter("give --snapshot or --source")

    def step():
        snapshot_id = snapshot
        if source:
            snapshot_id = ingest_snapshot(source, snapshot_id=snapshot, progress=_progress())["snapshot_id"]
        config = settings_for(snapshot_id)
        prepare_dataset(snapshot_id, seed=config.seed, balance=config.balance)
        rid = run_id or f"{snapshot_id}-{datetime.now(UTC):%Y%m%dT%H%M%S}"
        return run_retrain(rid, config, targets=target or None)

    _run(as_json, step)


DEMO_DEFAULTS = {"backbone": "lite0", "n_trials": 2, "max_epochs": 15}
"""The demo's budget: lite0's ImageNet weights work offline; two trials keep it to minutes on 2 cores."""


@app.command()
@run_settings_options(include=("backbone", "weights", "image_size"), defaults=DEMO_DEFAULTS)
def demo(
    movies: Annotated[int, typer.Option(min=50, help="Movies in the first synthetic snapshot.")] = 1500,
    train: Annotated[
        bool, typer.Option(help="Also retrain, promote and predict (--no-train: data plane only).")
    ] = True,
    as_json: JsonFlag = False,
    *,
    settings_for: SettingsFor,
) -> None:
    """The main job on the embedded default: two synthetic snapshots -> ingest -> labels -> drift -> tuning,
    the CNN and 19 OvA members -> champion vs challenger -> registry -> a prediction."""
    from postergenre.steps.drift import compute_drift
    from postergenre.steps.ingest import ingest_snapshot
    from postergenre.steps.prepare import prepare_dataset
    from postergenre.synth import generate_snapshot

    def step():
        settings = get_settings()
        progress = _progress()
        steps: dict[str, Any] = {"home": str(settings.home)}
        # Two exports a "week" apart: the second is bigger, with other proportions, and carries bad input.
        for snapshot_id, seed, count, faults in (
            ("demo-1", 1, movies, False),
            ("demo-2", 2, movies * 4 // 3, True),
        ):
            out = settings.home / "exports" / snapshot_id
            if not (out / "genres.csv").exists():
                with progress.task(f"synthesising {snapshot_id}", count) as advance:
                    generate_snapshot(out, movies=count, seed=seed, faults=faults, progress=advance)
            steps[f"ingest {snapshot_id}"] = ingest_snapshot(str(out), snapshot_id=snapshot_id, progress=progress)
        steps["prepare demo-2"] = prepare_dataset("demo-2")
        steps["drift demo-2"] = compute_drift("demo-2", baseline_id="demo-1")
        if train:
            steps.update(_demo_retrain(settings, settings_for("demo-2")))
        return steps

    _run(as_json, step, _render_demo)


def _demo_retrain(settings, config) -> dict:
    from postergenre.resources import data_store
    from postergenre.serving import predict_posters
    from postergenre.steps.run import run_retrain

    # One run per configuration: a rerun resumes it (finished steps are skipped or rewritten identically).
    run_id = f"demo-2-{config.backbone}-{config.image_size}px"
    retrain = run_retrain(run_id, config, actor="postergenre demo")
    from postergenre.datasets import load_labels

    labels = load_labels(data_store(settings), "demo-2", config.seed)
    movie_id = int(labels.loc[labels["split"] == "test", "movie_id"].iloc[0])  # a validated, unseen poster
    poster = settings.home / "exports" / "demo-2" / "posters" / f"{movie_id}.jpg"
    return {"retrain": retrain, "predict": predict_posters([poster], model="genre-cnn", top_k=3)}


def _render_demo(steps: dict) -> str:
    from postergenre.drift import render_text

    lines = [f"home: {steps['home']}"]
    for name in ("ingest demo-1", "ingest demo-2"):
        r = steps[name]
        lines.append(
            f"{name}: {r['status']}, {r['movies']} movies, {r['rows']} rows, "
            f"{r['quarantined']} quarantined, {r['uploaded_posters']} posters uploaded"
        )
    p = steps["prepare demo-2"]
    lines.append(f"prepare demo-2: {p['movies']} movies, per class {p['per_class']} -> {p['uri']}")
    lines.append(render_text(steps["drift demo-2"]))
    if "retrain" in steps:
        r, rep = steps["retrain"], steps["retrain"]["report"]
        lines.append(
            f"retrain {r['run_id']}: {r['trials']} trials, best {r['best']['hp']}, {r['trained']} models; "
            f"CNN test accuracy {rep['cnn_test_accuracy']:.3f}, macro-F1 {rep['cnn_test_macro_f1']:.3f} "
            f"(chance {rep['chance']:.3f}); OvA argmax macro-F1 {rep.get('ova_argmax_test_macro_f1', 0):.3f}"
        )
        lines.append(f"promoted: {', '.join(r['promoted']) or 'none'}; kept: {', '.join(r['kept']) or 'none'}")
        lines.append(f"report: {rep['report_uri']}")
        pred = steps["predict"]["predictions"][0]
        top = ", ".join(f"{g['genre']} {g['probability']:.2f}" for g in pred["genres"])
        lines.append(f"predict {pred['poster']} with genre-cnn {steps['predict']['version']}: {top}")
    return "\n".join(lines)

"""The ``postergenre`` command line: every step of the pipeline, ``--help`` everywhere, ``--json`` on every command.

Human output and progress bars go to stderr; with ``--json`` stdout carries exactly one JSON document, so the
commands compose in scripts (``postergenre ingest ... --json | jq .snapshot_id``).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from postergenre.config import get_settings
from postergenre.log import configure_logging

app = typer.Typer(
    help="Retrain movie-genre-from-poster classifiers: snapshots, labels, drift, tuning, training, registry.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(
    help="Metadata database (SQLite by default, PostgreSQL in production).", no_args_is_help=True
)
app.add_typer(db_app, name="db")
registry_app = typer.Typer(
    help="The model registry: versions, champions, alias log, rollback.", no_args_is_help=True
)
app.add_typer(registry_app, name="registry")

JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]
Tuning = Annotated[
    str,
    typer.Option(help="random, or hyperband (successive halving of the epoch budget, one pass per round)."),
]
FineTune = Annotated[
    bool,
    typer.Option(
        "--fine-tune/--no-fine-tune",
        help="After training, fine-tune genre-cnn with its top backbone blocks unfrozen (kept if val loss drops).",
    ),
]
FineTuneBlocks = Annotated[int, typer.Option(min=1, help="Top backbone blocks unfrozen by --fine-tune.")]
FineTuneLR = Annotated[
    float, typer.Option("--fine-tune-lr", min=0.0, help="Adam learning rate of --fine-tune.")
]


@app.callback()
def _main(
    log_level: Annotated[str, typer.Option(help="Log level for the structured logs on stderr.")] = "WARNING",
) -> None:
    configure_logging(log_level)


def _emit(result: Any, as_json: bool, render: Callable[[Any], str] | None = None) -> None:
    if as_json:
        typer.echo(json.dumps(result, indent=2, sort_keys=True, default=str))
    else:
        typer.echo(render(result) if render else _render_mapping(result))


def _render_mapping(result: dict) -> str:
    return "\n".join(
        f"{k:>20}: {json.dumps(v, default=str) if isinstance(v, dict | list) else v}"
        for k, v in result.items()
    )


def _run(as_json: bool, fn: Callable[[], Any], render: Callable[[Any], str] | None = None) -> None:
    """Run a step; known failures become one line on stderr (and a JSON error) with exit code 2, no traceback."""
    from postergenre.registry import RegistryError
    from postergenre.snapshots import SnapshotConflict
    from postergenre.storage import StoreError
    from postergenre.validation import ExportError

    try:
        result = fn()
    except (
        StoreError,
        ExportError,
        SnapshotConflict,
        RegistryError,
        LookupError,
        ValueError,
        RuntimeError,
        FileNotFoundError,
    ) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if as_json:
            typer.echo(json.dumps({"error": message, "type": type(exc).__name__}))
        typer.echo(f"error: {message}", err=True)
        raise typer.Exit(2) from None
    _emit(result, as_json, render)


def _progress():
    from postergenre.progress import default_progress

    return default_progress()


@app.command()
def synth(
    out: Annotated[Path, typer.Argument(help="Folder to write genres.csv and posters/ into.")],
    movies: Annotated[int, typer.Option(help="Number of movies.")] = 2000,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same bytes).")] = 0,
    faults: Annotated[bool, typer.Option("--faults", help="Add the bad input real exports contain.")] = False,
    posters: Annotated[bool, typer.Option(help="Write poster JPEGs (--no-posters: CSV only).")] = True,
    as_json: JsonFlag = False,
) -> None:
    """Generate a synthetic letterboxd-shaped snapshot (genres.csv + posters/<id>.jpg)."""
    from postergenre.synth import generate_snapshot

    def step():
        progress = _progress()
        with progress.task("generating posters", movies if posters else 0) as advance:
            return generate_snapshot(
                out, movies=movies, seed=seed, faults=faults, posters=posters, progress=advance
            ).to_dict()

    _run(as_json, step)


@app.command("ingest")
def ingest_cmd(
    source: Annotated[
        str, typer.Argument(help="Export folder, .zip/.tar.gz archive, or s3://bucket/prefix.")
    ],
    snapshot: Annotated[str | None, typer.Option(help="Snapshot id (default: today's date, UTC).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Validate an export and publish it as an immutable snapshot in the store (quarantining bad input)."""
    from postergenre.steps.ingest import ingest_snapshot

    _run(as_json, lambda: ingest_snapshot(source, snapshot_id=snapshot, progress=_progress()))


@app.command()
def prepare(
    snapshot: Annotated[str, typer.Argument(help="Published snapshot id.")],
    seed: Annotated[int | None, typer.Option(help="Sampling seed (default: POSTERGENRE_SEED).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Label processing of the method report: collapse, balance, 70/15/15 split, one-hot, OvA sets."""
    from postergenre.steps.prepare import prepare_dataset

    _run(as_json, lambda: prepare_dataset(snapshot, seed=seed))


@app.command()
def drift(
    snapshot: Annotated[str, typer.Argument(help="Published snapshot id.")],
    baseline: Annotated[
        str | None, typer.Option(help="Baseline snapshot (default: the previous one).")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Genre-distribution drift (JS distance, PSI, L-inf, chi-square, per-genre tests) and its severity."""
    from postergenre.drift import render_text
    from postergenre.steps.drift import compute_drift

    _run(
        as_json,
        lambda: compute_drift(snapshot, baseline_id=baseline),
        render=lambda r: render_text(r) if r.get("baseline_id") else _render_mapping(r),
    )


@app.command()
def snapshots(as_json: JsonFlag = False) -> None:
    """List the published snapshots in the store."""
    from postergenre.resources import data_store
    from postergenre.snapshots import list_snapshots

    _run(
        as_json,
        lambda: {"store": get_settings().store_url, "snapshots": list_snapshots(data_store(get_settings()))},
    )


@db_app.command("upgrade")
def db_upgrade(as_json: JsonFlag = False) -> None:
    """Create or migrate the metadata DB schema to the newest revision (idempotent)."""
    from postergenre import db

    def step():
        url = get_settings().db_url
        db.upgrade(db.make_engine(url))
        return {"db_url": url, "status": "up to date"}

    _run(as_json, step)


Target = Annotated[
    list[str] | None,
    typer.Option(
        "--target", help="genre-cnn or a genre name (repeatable; default: genre-cnn and every OvA member)."
    ),
]


def _targets(run_id: str, targets: list[str] | None) -> list[str]:
    from postergenre.retrain import all_targets, load_run

    return targets or all_targets(load_run(run_id))


@app.command()
def tune(
    snapshot: Annotated[str, typer.Argument(help="Prepared snapshot id.")],
    run_id: Annotated[
        str, typer.Option(help="Run id (outputs go to runs/<id>/; reruns skip finished trials).")
    ],
    trials: Annotated[
        int, typer.Option(help="Random search: trials. Hyperband: configurations sampled for round 0.")
    ] = 4,
    tuning: Tuning = "random",
    backbone: Annotated[str, typer.Option(help="efficientnetv2b0, resnet50 or tiny.")] = "efficientnetv2b0",
    weights: Annotated[str, typer.Option(help="imagenet, none, or a .weights.h5 path / URI.")] = "imagenet",
    image_size: Annotated[int | None, typer.Option(help="Poster size (default: settings).")] = None,
    max_epochs: Annotated[
        int, typer.Option(help="Epoch budget per model (early stopping, patience 3).")
    ] = 20,
    seed: Annotated[int | None, typer.Option(help="Dataset seed (default: settings).")] = None,
    fine_tune: FineTune = False,
    fine_tune_blocks: FineTuneBlocks = 2,
    fine_tune_lr: FineTuneLR = 1e-5,
    as_json: JsonFlag = False,
) -> None:
    """Start a run: embed the posters once, then run the planned trials and select the best."""
    from postergenre.retrain import (
        RetrainConfig,
        embed_step,
        planned_trials,
        run_tuning,
        select_step,
        start_run,
    )

    def step():
        settings = get_settings()
        config = RetrainConfig(
            snapshot_id=snapshot,
            seed=settings.seed if seed is None else seed,
            backbone=backbone,
            weights=weights,
            image_size=image_size or settings.image_size,
            batch_size=settings.batch_size,
            n_trials=trials,
            tuning=tuning,
            max_epochs=max_epochs,
            fine_tune=fine_tune,
            fine_tune_blocks=fine_tune_blocks,
            fine_tune_learning_rate=fine_tune_lr,
        )
        run = start_run(run_id, config)["run_id"]
        embedded = embed_step(run)
        progress = _progress()
        with progress.task("tuning trials", planned_trials(run)) as advance:
            results = run_tuning(run, on_trial=lambda _: advance(1))
        return {
            "run_id": run,
            "feature_key": embedded["feature_key"],
            "trials": results,
            "best": select_step(run),
        }

    _run(as_json, step)


@app.command()
def train(
    run_id: Annotated[str, typer.Argument(help="A tuned run.")],
    target: Target = None,
    as_json: JsonFlag = False,
) -> None:
    """Train the multi-class CNN and/or OvA members with the run's best hyperparameters (resumes checkpoints);
    then the fine-tune stage of genre-cnn when the run was started with --fine-tune."""
    from postergenre.retrain import CNN, fine_tune_step, train_step

    def step():
        targets = _targets(run_id, target)
        out = []
        with _progress().task("training", len(targets)) as advance:
            for name in targets:
                out.append(train_step(run_id, name))
                advance(1)
        fine_tuned = fine_tune_step(run_id) if CNN in targets else None
        return {"run_id": run_id, "trained": out, "fine_tune": fine_tuned}

    _run(as_json, step)


@app.command()
def evaluate(
    run_id: Annotated[str, typer.Argument(help="A trained run.")],
    target: Target = None,
    as_json: JsonFlag = False,
) -> None:
    """Score each challenger against its champion on the same test split; write every decision and the report."""
    from postergenre.retrain import evaluate_step, report_step

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
    from postergenre.retrain import promote_step

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
def run_cmd(
    snapshot: Annotated[str | None, typer.Option(help="A published snapshot to train on.")] = None,
    source: Annotated[
        str | None, typer.Option(help="Or an export to ingest first (folder, archive, s3://).")
    ] = None,
    run_id: Annotated[
        str | None, typer.Option(help="Run id (default: derived from the snapshot and time).")
    ] = None,
    trials: Annotated[int, typer.Option(help="Tuning trials.")] = 4,
    tuning: Tuning = "random",
    backbone: Annotated[str, typer.Option(help="efficientnetv2b0, resnet50 or tiny.")] = "efficientnetv2b0",
    weights: Annotated[str, typer.Option(help="imagenet, none, or a .weights.h5 path / URI.")] = "imagenet",
    image_size: Annotated[int | None, typer.Option(help="Poster size (default: settings).")] = None,
    max_epochs: Annotated[int, typer.Option(help="Epoch budget per model.")] = 20,
    fine_tune: FineTune = False,
    fine_tune_blocks: FineTuneBlocks = 2,
    fine_tune_lr: FineTuneLR = 1e-5,
    target: Target = None,
    as_json: JsonFlag = False,
) -> None:
    """The whole retrain in-process: ingest (with --source), prepare, embed, tune, train, evaluate, promote, report."""
    from datetime import UTC, datetime

    from postergenre.retrain import RetrainConfig, run_retrain
    from postergenre.steps.ingest import ingest_snapshot
    from postergenre.steps.prepare import prepare_dataset

    def step():
        settings = get_settings()
        snapshot_id = snapshot
        if source:
            snapshot_id = ingest_snapshot(source, snapshot_id=snapshot, progress=_progress())["snapshot_id"]
        if not snapshot_id:
            raise ValueError("give --snapshot or --source")
        prepare_dataset(snapshot_id)
        config = RetrainConfig(
            snapshot_id=snapshot_id,
            seed=settings.seed,
            backbone=backbone,
            weights=weights,
            image_size=image_size or settings.image_size,
            batch_size=settings.batch_size,
            n_trials=trials,
            tuning=tuning,
            max_epochs=max_epochs,
            fine_tune=fine_tune,
            fine_tune_blocks=fine_tune_blocks,
            fine_tune_learning_rate=fine_tune_lr,
        )
        rid = run_id or f"{snapshot_id}-{datetime.now(UTC):%Y%m%dT%H%M%S}"
        return run_retrain(rid, config, targets=target or None)

    _run(as_json, step)


@app.command()
def predict(
    posters: Annotated[list[Path], typer.Argument(help="Poster image files (JPEG or PNG).")],
    model: Annotated[
        str, typer.Option(help="genre-cnn (top genres) or genre-ova (multi-label).")
    ] = "genre-cnn",
    top_k: Annotated[int, typer.Option(help="Genres to show per poster (genre-cnn).")] = 3,
    as_json: JsonFlag = False,
) -> None:
    """Predict genres of posters with the champion models."""
    from postergenre.serving import predict_posters

    def render(result: dict) -> str:
        lines = [f"model {result['model']} {result.get('version', '')}".rstrip()]
        for row in result["predictions"]:
            genres = ", ".join(f"{g['genre']} {g['probability']:.2f}" for g in row["genres"]) or "(none)"
            lines.append(f"{row['poster']}: {genres}")
        return "\n".join(lines)

    _run(as_json, lambda: predict_posters(list(posters), model=model, top_k=top_k), render)


def _registry_store():
    from postergenre.storage import open_store

    return open_store(get_settings().registry_url)


@registry_app.command("list")
def registry_list(as_json: JsonFlag = False) -> None:
    """Models with their current champion."""
    from postergenre import registry

    def step():
        store = _registry_store()
        return {
            "models": [
                {
                    "name": name,
                    "champion": (registry.get_champion(store, name) or {}).get("version"),
                    "versions": len(registry.list_versions(store, name)),
                }
                for name in registry.list_models(store)
            ]
        }

    _run(as_json, step)


@registry_app.command("show")
def registry_show(
    name: Annotated[str, typer.Argument(help="Model name, e.g. genre-cnn or genre-ova/western.")],
    version: Annotated[str | None, typer.Argument(help="Version (default: the champion).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Lineage, metrics and decision of a version."""
    from postergenre import registry

    def step():
        store = _registry_store()
        chosen = version or (registry.get_champion(store, name) or {}).get("version")
        if chosen is None:
            raise LookupError(f"{name} has no champion; name a version")
        return registry.show_version(store, name, chosen)

    _run(as_json, step)


@registry_app.command("history")
def registry_history(
    name: Annotated[str, typer.Argument(help="Model name.")],
    at: Annotated[str | None, typer.Option(help="ISO time: which version was champion then.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """The alias log (every champion move: who, from, to, why), or the champion at a given time."""
    from datetime import UTC, datetime

    from postergenre import registry

    def step():
        store = _registry_store()
        if at:
            when = datetime.fromisoformat(at)
            when = when if when.tzinfo else when.replace(tzinfo=UTC)
            return {"name": name, "at": when.isoformat(), "champion": registry.champion_at(store, name, when)}
        return {"name": name, "history": registry.history(store, name)}

    _run(as_json, step)


@registry_app.command("rollback")
def registry_rollback(
    name: Annotated[str, typer.Argument(help="Model name.")],
    reason: Annotated[str, typer.Option(help="Why (alias log).")],
    to: Annotated[
        str | None, typer.Option(help="Version to restore (default: the previous champion).")
    ] = None,
    actor: Annotated[str, typer.Option(help="Who rolls back (alias log).")] = "cli",
    as_json: JsonFlag = False,
) -> None:
    """Move the champion back (to the previous one, or to --to)."""
    from postergenre import registry

    _run(
        as_json, lambda: registry.rollback(_registry_store(), name, to_version=to, actor=actor, reason=reason)
    )


@app.command()
def demo(
    movies: Annotated[int, typer.Option(help="Movies in the first synthetic snapshot.")] = 1500,
    backbone: Annotated[
        str, typer.Option(help="Backbone; lite0 has ImageNet weights that work offline.")
    ] = "lite0",
    train: Annotated[
        bool, typer.Option(help="Also retrain, promote and predict (--no-train: data plane only).")
    ] = True,
    image_size: Annotated[int | None, typer.Option(help="Poster size (default: settings).")] = None,
    as_json: JsonFlag = False,
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
            steps[f"ingest {snapshot_id}"] = ingest_snapshot(
                str(out), snapshot_id=snapshot_id, progress=progress
            )
        steps["prepare demo-2"] = prepare_dataset("demo-2")
        steps["drift demo-2"] = compute_drift("demo-2", baseline_id="demo-1")
        if train:
            from postergenre.retrain import RetrainConfig, run_retrain
            from postergenre.serving import predict_posters

            config = RetrainConfig(
                snapshot_id="demo-2",
                seed=settings.seed,
                backbone=backbone,
                weights="none" if backbone == "tiny" else "imagenet",  # tiny has no pretrained weights
                image_size=image_size or settings.image_size,
                batch_size=settings.batch_size,
                n_trials=2,
                max_epochs=15,
            )
            # One run per configuration: a rerun resumes it (finished steps are skipped or rewritten identically).
            run_id = f"demo-2-{backbone}-{config.image_size}px"
            steps["retrain"] = run_retrain(run_id, config, actor="postergenre demo")
            from postergenre.datasets import load_labels
            from postergenre.resources import data_store

            labels = load_labels(data_store(settings), "demo-2", settings.seed)
            movie_id = int(
                labels.loc[labels["split"] == "test", "movie_id"].iloc[0]
            )  # a validated, unseen poster
            poster = settings.home / "exports" / "demo-2" / "posters" / f"{movie_id}.jpg"
            steps["predict"] = predict_posters([poster], model="genre-cnn", top_k=3)
        return steps

    def render(steps: dict) -> str:
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
            lines.append(
                f"promoted: {', '.join(r['promoted']) or 'none'}; kept: {', '.join(r['kept']) or 'none'}"
            )
            lines.append(f"report: {rep['report_uri']}")
            pred = steps["predict"]["predictions"][0]
            top = ", ".join(f"{g['genre']} {g['probability']:.2f}" for g in pred["genres"])
            lines.append(f"predict {pred['poster']} with genre-cnn {steps['predict']['version']}: {top}")
        return "\n".join(lines)

    _run(as_json, step, render)


def main() -> None:  # pragma: no cover - console entry point
    sys.exit(app())

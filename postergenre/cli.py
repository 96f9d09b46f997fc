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
    help="Retrain movie-genre-from-poster classifiers: snapshots, labels, drift (and, next, models).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(
    help="Metadata database (SQLite by default, PostgreSQL in production).", no_args_is_help=True
)
app.add_typer(db_app, name="db")

JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]


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
    from postergenre.snapshots import SnapshotConflict
    from postergenre.storage import StoreError
    from postergenre.validation import ExportError

    try:
        result = fn()
    except (StoreError, ExportError, SnapshotConflict, ValueError, FileNotFoundError) as exc:
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
    from postergenre.pipeline import ingest_snapshot

    _run(as_json, lambda: ingest_snapshot(source, snapshot_id=snapshot, progress=_progress()))


@app.command()
def prepare(
    snapshot: Annotated[str, typer.Argument(help="Published snapshot id.")],
    seed: Annotated[int | None, typer.Option(help="Sampling seed (default: POSTERGENRE_SEED).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Label processing of the method report: collapse, balance, 70/15/15 split, one-hot, OvA sets."""
    from postergenre.pipeline import prepare_dataset

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
    from postergenre.pipeline import compute_drift

    _run(
        as_json,
        lambda: compute_drift(snapshot, baseline_id=baseline),
        render=lambda r: render_text(r) if r.get("baseline_id") else _render_mapping(r),
    )


@app.command()
def snapshots(as_json: JsonFlag = False) -> None:
    """List the published snapshots in the store."""
    from postergenre.pipeline import data_store
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


@app.command()
def demo(
    movies: Annotated[int, typer.Option(help="Movies in each synthetic snapshot.")] = 1500,
    as_json: JsonFlag = False,
) -> None:
    """The main job on the embedded default: synthesise two snapshots, ingest, prepare labels, report drift."""
    from postergenre.pipeline import compute_drift, ingest_snapshot, prepare_dataset
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
        return "\n".join(lines)

    _run(as_json, step, render)


def main() -> None:  # pragma: no cover - console entry point
    sys.exit(app())

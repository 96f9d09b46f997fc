"""The ``postergenre`` command line: every step of the pipeline, ``--help`` everywhere, ``--json`` on every command.

Human output and progress bars go to stderr; with ``--json`` stdout carries exactly one JSON document, so the
commands compose in scripts (``postergenre ingest ... --json | jq .snapshot_id``). Failures and exit codes
(2 usage error, 3 known failure) follow ``cli_errors``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from postergenre import cli_errors
from postergenre.config import get_settings
from postergenre.log import configure_logging

app = typer.Typer(
    cls=cli_errors.Group,
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

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]  # postergenre.log.LEVELS
JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]


@app.callback()
def _main(
    log_level: Annotated[
        LogLevel,
        typer.Option(case_sensitive=False, help="Log level for the structured logs on stderr."),
    ] = "WARNING",
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


def _run(
    as_json: bool,
    fn: Callable[[], Any],
    render: Callable[[Any], str] | None = None,
    *,
    failed: Callable[[Any], tuple[str, str] | None] | None = None,
) -> None:
    """Run a step; known failures become one line on stderr (and a JSON error) with exit code 3, no traceback.

    ``failed(result)`` may name a partial failure, ``(message, type)``: the result is still printed (with
    ``error`` and ``type`` added), then the command fails the same way.
    """
    try:
        result = fn()
    except cli_errors.known_failures() as exc:
        cli_errors.fail(cli_errors.exception_message(exc), type(exc).__name__, as_json=as_json)
    problem = failed(result) if failed else None
    if problem is None:
        _emit(result, as_json, render)
        return
    message, kind = problem
    code = cli_errors.KNOWN_FAILURE
    _emit(
        {**result, "error": message, "type": kind, "exit_code": code} if as_json else result, as_json, render
    )
    typer.echo(f"error: {cli_errors.one_line(message)}", err=True)
    raise typer.Exit(code)


def _progress():
    from postergenre.progress import default_progress

    return default_progress()


@app.command()
def synth(
    out: Annotated[Path, typer.Argument(help="Folder to write genres.csv and posters/ into.")],
    movies: Annotated[int, typer.Option(min=1, help="Number of movies (at least 100 with --faults).")] = 2000,
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
    balance: Annotated[
        str,
        typer.Option(
            help="undersample (the report's: every class cut to the rarest) or weighted (every labelled movie "
            "in train, with class weights; the same val and test splits)."
        ),
    ] = "undersample",
    as_json: JsonFlag = False,
) -> None:
    """Label processing of the method report: collapse, balance, 70/15/15 split, one-hot, OvA sets."""
    from postergenre.steps.prepare import prepare_dataset

    _run(as_json, lambda: prepare_dataset(snapshot, seed=seed, balance=balance))


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


@app.command()
def predict(
    posters: Annotated[list[Path], typer.Argument(help="Poster image files (JPEG or PNG).")],
    model: Annotated[
        Literal["genre-cnn", "genre-ova"],
        typer.Option(help="genre-cnn (top genres) or genre-ova (multi-label)."),
    ] = "genre-cnn",
    top_k: Annotated[int, typer.Option(min=1, max=19, help="Genres to show per poster (genre-cnn).")] = 3,
    as_json: JsonFlag = False,
) -> None:
    """Predict genres of posters with the champion models. A poster that cannot be used gets its own error
    (the others are still predicted) and the command then exits with code 3."""
    from postergenre.serving import predict_posters

    def render(result: dict) -> str:
        lines = [f"model {result['model']} {result.get('version', '')}".rstrip()]
        for row in result["predictions"]:
            if "error" in row:
                lines.append(f"{row['poster']}: error: {row['error']}")
                continue
            genres = ", ".join(f"{g['genre']} {g['probability']:.2f}" for g in row["genres"]) or "(none)"
            lines.append(f"{row['poster']}: {genres}")
        return "\n".join(lines)

    _run(
        as_json, lambda: predict_posters(list(posters), model=model, top_k=top_k), render, failed=_bad_posters
    )


def _bad_posters(result: dict) -> tuple[str, str] | None:
    errors = [row["error"] for row in result["predictions"] if "error" in row]
    if not errors:
        return None
    total = len(result["predictions"])
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{len(errors)} of {total} posters failed: {errors[0]}{more}", "PosterError"


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


def _check_iso_time(value: str | None) -> str | None:
    """``--at`` must be ISO 8601: anything else is a mistyped command line (a usage error), not a failure."""
    from datetime import datetime

    if value is not None:
        try:
            datetime.fromisoformat(value)
        except ValueError:
            raise typer.BadParameter(
                f"{value!r} is not an ISO 8601 time, e.g. 2026-11-24T10:00:00+00:00"
            ) from None
    return value


@registry_app.command("history")
def registry_history(
    name: Annotated[str, typer.Argument(help="Model name.")],
    at: Annotated[
        str | None,
        typer.Option(callback=_check_iso_time, help="ISO time: which version was champion then."),
    ] = None,
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
    """Move the champion back: to the version the champion's promotion replaced (skipping versions rolled back
    from), or to --to. A rollback that finds the champion already moved by someone else changes nothing."""
    from postergenre import registry

    _run(
        as_json, lambda: registry.rollback(_registry_store(), name, to_version=to, actor=actor, reason=reason)
    )


# The model-plane commands register themselves on ``app``.
from postergenre import cli_retrain  # noqa: E402, F401


def main() -> None:  # pragma: no cover - console entry point
    sys.exit(app())

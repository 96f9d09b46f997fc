"""Weekly (and on drift alerts) retrain of the genre models: the model plane fanned out as Airflow tasks.

Runs on the cron ``POSTERGENRE_RETRAIN_CRON`` (default Sundays 04:00 UTC) and whenever the monitor publishes a
snapshot event; an event-triggered run goes on only if some event's drift severity is ``alert``.

1. **gate** (short-circuit): refuses incomplete requests (``force_promote`` without a reason) and skips
   event-triggered runs whose drift is not ``alert``.
2. **resolve_inputs**: ingests ``source`` when given; otherwise picks ``snapshot_id``, the alerting event's
   snapshot, or the newest ingested one. **prepare**: the seeded label splits of that snapshot.
3. **start**: records the run's configuration under ``runs/<run id>/`` (derived from the Airflow run id, so a
   cleared task rewrites the same outputs). **embed** (queue ``gpu``, GPU pool): backbone features, cached.
4. **plan** -> **trial** (one mapped task per trial) -> **select**: random search over the heads, or Hyperband:
   then **halving_<r>** promotes each bracket's best of round r-1 and **trial_round_<r>** trains round r with a
   larger epoch budget (empty, so skipped, for random search and past a plan's last round).
5. **train** -> **fine_tune** (queue ``gpu``; only when ``fine_tune`` is on: unfreezes the top backbone blocks of
   ``genre-cnn`` and keeps the result only if it lowers the validation loss) -> **evaluate** -> **promote**, each
   mapped over ``genre-cnn`` and the one-vs-all members (all genres of the dataset, or those in ``ova_genres``):
   every challenger is compared with its champion and the decision is written down; promotion moves the
   champion pointer only from the evaluated champion and is a no-op when repeated. ``dry_run`` trains and
   evaluates but never registers; ``force_promote`` (with ``force_reason``) promotes against the decision,
   recorded in the alias log with the triggering user.
6. **report**: the method report's tables for this run, as JSON and Markdown in the data store.

Only ids and small dicts travel through XCom; features, models and reports live in the store and registry.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime

from airflow.sdk import (
    AssetOrTimeSchedule,
    CronTriggerTimetable,
    Param,
    TriggerRule,
    dag,
    get_current_context,
    task,
)
from airflow.sdk.exceptions import AirflowFailException

from postergenre.dag_support import (
    GPU_POOL,
    RETRAIN_CRON_ENV,
    SNAPSHOT_ID_PATTERN,
    SNAPSHOTS_ASSET,
    TUNING_ROUNDS,
    PostergenreNotifier,
    check_retrain_params,
    default_args,
    newest_snapshot_id,
    resolve_snapshot_id,
    retrain_trigger,
    run_actor,
    run_params,
    run_settings_from_params,
    select_targets,
    task_settings,
    trial_label,
)
from postergenre.genres import GENRES

CRON = os.environ.get(RETRAIN_CRON_ENV, "0 4 * * 0")

PARAMS = {
    "source": Param(
        "",
        type="string",
        title="Source export (optional)",
        description=(
            "Export to ingest as a new snapshot before training: a local folder, a .zip/.tar.gz archive or an "
            "s3://bucket/prefix. Empty: train on an existing snapshot (see snapshot_id)."
        ),
    ),
    "snapshot_id": Param(
        "",
        type="string",
        pattern=SNAPSHOT_ID_PATTERN,
        title="Snapshot id",
        description=(
            "Snapshot to train on. Empty: the snapshot of the drift alert that triggered the run, else the newest "
            "ingested one. With a source, the id to ingest it under (empty: the run's date)."
        ),
    ),
    **run_params(),  # every RunSettings field: types, bounds, choices and help from the one declaration
    "ova_genres": Param(
        [],
        type="array",
        items={"type": "string", "enum": list(GENRES)},
        uniqueItems=True,
        title="One-vs-all genres",
        description=(
            "Genres whose one-vs-all member is trained, evaluated and promoted (genre-cnn always is). "
            "Empty: every genre in the dataset."
        ),
    ),
    "force_promote": Param(
        False,
        type="boolean",
        title="Force promotion",
        description=(
            "Promote every trained model even where the decision is to keep the champion. Needs force_reason; "
            "recorded in the alias log with the triggering user."
        ),
    ),
    "force_reason": Param(
        "",
        type="string",
        title="Reason for forcing",
        description="Why the promotion is forced (required with force_promote); written to each alias log.",
    ),
}


@dag(
    dag_id="postergenre_retrain",
    schedule=AssetOrTimeSchedule(timetable=CronTriggerTimetable(CRON, timezone="UTC"), assets=SNAPSHOTS_ASSET),
    start_date=datetime(2025, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(),
    params=PARAMS,
    tags=["postergenre", "training"],
    doc_md=__doc__,
    on_failure_callback=PostergenreNotifier("postergenre_retrain run {{ run_id }} failed"),
)
def postergenre_retrain():
    @task.short_circuit
    def gate() -> dict | None:
        """Fail fast on a request the run cannot honour; skip everything on a non-alert snapshot event."""
        context = get_current_context()
        try:
            check_retrain_params(context["params"])
        except ValueError as exc:
            raise AirflowFailException(str(exc)) from None
        events = [e for evs in context["triggering_asset_events"].values() for e in evs]
        decision = retrain_trigger(context["dag_run"].run_type, events)
        if decision is None:
            print(f"{len(events)} snapshot event(s), none with drift severity alert: nothing to retrain")
        return decision

    @task
    def resolve_inputs(trigger: dict) -> dict:
        """The snapshot to train on: ingested from ``source``, requested, the alert's, or the newest."""
        from postergenre.resources import data_store
        from postergenre.snapshots import load_manifest
        from postergenre.steps.ingest import ingest_snapshot
        from postergenre.storage import NotFound

        context = get_current_context()
        params, settings = context["params"], task_settings()
        if params["source"]:
            snapshot_id = resolve_snapshot_id(params["snapshot_id"], context)
            try:
                ingested = ingest_snapshot(params["source"], snapshot_id=snapshot_id, settings=settings)
            except ValueError as exc:  # a bad export or a conflicting id: retrying cannot fix it
                raise AirflowFailException(f"cannot ingest {params['source']}: {exc}") from None
            return {"snapshot_id": ingested["snapshot_id"], "origin": "source", "ingest": ingested["status"]}
        origin, snapshot_id = "param", params["snapshot_id"]
        if not snapshot_id and trigger.get("snapshot_id"):
            origin, snapshot_id = "drift alert", trigger["snapshot_id"]
        if not snapshot_id:
            origin, snapshot_id = "newest", newest_snapshot_id(settings)
        if not snapshot_id:
            raise AirflowFailException("no snapshot ingested yet: run postergenre_monitor or set 'source'")
        try:
            load_manifest(data_store(settings), snapshot_id)
        except NotFound:
            raise AirflowFailException(f"snapshot {snapshot_id!r} ({origin}) is not published") from None
        return {"snapshot_id": snapshot_id, "origin": origin}

    @task
    def prepare(inputs: dict) -> dict:
        from postergenre.steps.prepare import prepare_dataset

        seed = get_current_context()["params"]["seed"]
        return prepare_dataset(inputs["snapshot_id"], seed=seed, settings=task_settings())

    @task
    def start(prepared: dict) -> str:
        """Record the run's configuration; returns the retrain run id (the Airflow run id, made key-safe)."""
        from postergenre.steps.start import start_run

        context = get_current_context()
        config = run_settings_from_params(context["params"], prepared["snapshot_id"])
        started = start_run(context["run_id"], config, task_settings())
        print(f"retrain run {started['run_id']} at {started['uri']}")
        return started["run_id"]

    @task(queue="gpu", pool=GPU_POOL)
    def embed(retrain_id: str) -> dict:
        from postergenre.steps.embed import embed_step

        return embed_step(retrain_id, task_settings())

    @task
    def plan(retrain_id: str) -> list[dict]:
        from postergenre.steps.tune import plan_step

        return plan_step(retrain_id, task_settings())

    @task(map_index_template="{{ trial_label }}")
    def trial(retrain_id: str, trial: dict) -> dict:
        from postergenre.steps.tune import trial_step

        get_current_context()["trial_label"] = trial_label(trial)
        return trial_step(retrain_id, trial, task_settings())

    @task(trigger_rule=TriggerRule.NONE_FAILED)
    def halving(retrain_id: str, round_index: int) -> list[dict]:
        """Hyperband's next round: each bracket's best trials of the previous round, with more epochs."""
        from postergenre.steps.tune import halving_step

        return halving_step(retrain_id, round_index, task_settings())

    @task(trigger_rule=TriggerRule.NONE_FAILED)
    def select(retrain_id: str) -> dict:
        from postergenre.steps.tune import select_step

        return select_step(retrain_id, task_settings())

    @task
    def targets(retrain_id: str) -> list[str]:
        """``genre-cnn`` and the requested (default: every) genre of the dataset: what train, evaluate and
        promote fan out over."""
        from postergenre.steps.run import run_targets

        available = run_targets(retrain_id, task_settings())
        try:
            return select_targets(available, get_current_context()["params"]["ova_genres"])
        except ValueError as exc:
            raise AirflowFailException(str(exc)) from None

    @task(map_index_template="{{ task.op_kwargs['target'] }}")
    def train(retrain_id: str, target: str) -> dict:
        from postergenre.steps.train import train_step

        return train_step(retrain_id, target, task_settings())

    @task(queue="gpu", pool=GPU_POOL)
    def fine_tune(retrain_id: str) -> dict:
        from postergenre.steps.finetune import fine_tune_step

        return fine_tune_step(retrain_id, task_settings())

    @task(map_index_template="{{ task.op_kwargs['target'] }}")
    def evaluate(retrain_id: str, target: str) -> dict:
        from postergenre.steps.evaluate import evaluate_step

        return evaluate_step(retrain_id, target, task_settings())

    @task(map_index_template="{{ task.op_kwargs['target'] }}")
    def promote(retrain_id: str, target: str) -> dict:
        """Register and promote as decided (or forced); a repeat is a no-op, a dry run registers nothing."""
        from postergenre.steps.promote import promote_step

        context = get_current_context()
        params = context["params"]
        return promote_step(
            retrain_id,
            target,
            actor=run_actor(context["dag_run"]),
            force=params["force_promote"],
            force_reason=params["force_reason"],
            settings=task_settings(),
        )

    @task
    def report(retrain_id: str) -> dict:
        from postergenre.steps.report import report_step

        return report_step(retrain_id, task_settings())

    inputs = resolve_inputs(gate())
    retrain_id = start(prepare(inputs))
    embedded = embed(retrain_id)
    planned = plan(retrain_id)
    trials = trial.partial(retrain_id=retrain_id).expand(trial=planned)
    for round_index in range(1, TUNING_ROUNDS):  # Hyperband's rounds; a round with no trials is skipped
        promoted_trials = halving.override(task_id=f"halving_{round_index}")(retrain_id, round_index)
        trials >> promoted_trials
        trials = (
            trial.override(task_id=f"trial_round_{round_index}", trigger_rule=TriggerRule.NONE_FAILED)
            .partial(retrain_id=retrain_id)
            .expand(trial=promoted_trials)
        )
    selected = select(retrain_id)
    names = targets(retrain_id)
    trained = train.partial(retrain_id=retrain_id).expand(target=names)
    evaluated = evaluate.partial(retrain_id=retrain_id).expand(target=names)
    promoted = promote.partial(retrain_id=retrain_id).expand(target=names)
    embedded >> planned
    trials >> selected >> names
    trained >> fine_tune(retrain_id) >> evaluated >> promoted >> report(retrain_id)


postergenre_retrain()

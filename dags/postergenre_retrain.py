"""Weekly (and on drift alerts) retrain of the genre models: the model plane fanned out as Airflow tasks.

Runs on the cron ``POSTERGENRE_RETRAIN_CRON`` (default Sundays 04:00 UTC) and whenever the monitor publishes a
``postergenre://drift-alerts`` event (only alerts: a quiet night starts nothing). Unpausing starts no run for a
past tick, and a scheduled run whose tick is stale (``POSTERGENRE_STALE_TICK_MINUTES``, default 60) skips.

1. **gate** (short-circuit): validates the whole request (RunSettings, including the backbone/weights pair;
   ``force_promote`` needs a reason; the GPU pool exists) and fails at once with the reason; skips stale ticks.
2. **resolve_inputs**: ingests ``source`` when given (never in a backfill: the export is today's); otherwise
   ``snapshot_id``, the alert's snapshot, or the newest ingested one. **prepare**: the seeded label splits.
3. **start**: records the run's settings under ``runs/<run id>/``. **embed** (queue ``gpu``, TensorFlow, its own
   timeout): backbone features, cached.
4. **plan** -> **trial** (one mapped task per trial) -> [**halving_<r>** -> **trial_round_<r>**: Hyperband's
   rounds] -> **select**.
5. **genre_cnn** (task group): train -> fine_tune (queue ``gpu``, TensorFlow; a no-op unless ``fine_tune``) ->
   evaluate -> promote. **ova** (a task group mapped over the one-vs-all genres): train -> evaluate -> promote,
   so each genre proceeds, and fails, on its own. Head tasks run Keras on JAX (``POSTERGENRE_HEAD_BACKEND``).
   A promotion that moves a champion publishes a ``postergenre://champions`` event. ``dry_run`` registers
   nothing; ``force_promote`` promotes against the decision, audited in the alias log.
6. **report** (runs when every model is done): the method report's tables; fails if a model did not finish.

Deterministic errors (bad input, refused settings) fail without retries; store and network errors retry.
Only ids and small dicts travel through XCom; features, models and reports live in the store and registry.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

from airflow.sdk import (
    AssetOrTimeSchedule,
    CronTriggerTimetable,
    Param,
    TriggerRule,
    dag,
    get_current_context,
    task,
    task_group,
)
from airflow.sdk.exceptions import AirflowFailException

from postergenre.assets import CHAMPION_MOVES, DRIFT_ALERT_ASSET, publish_champion_move
from postergenre.dag_support import (
    CHAMPION_MODEL,
    RETRAIN_CRON_ENV,
    SNAPSHOT_ID_PATTERN,
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
from postergenre.task_guards import (
    check_pool_exists,
    gpu_pool,
    head_backend,
    pixel_backend,
    pixel_timeout,
    refuse_backfill_ingest,
    run_step,
    stale_grace,
    stale_tick,
)

CRON = os.environ.get(RETRAIN_CRON_ENV, "0 4 * * 0")
GPU_POOL = gpu_pool()
MODEL_LABEL = "{{ model_label }}"
"""Map index label of the ``ova`` group's tasks: the genre (set by each task; a group's expand kwargs are not
in ``op_kwargs``)."""

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
    schedule=AssetOrTimeSchedule(
        # run_immediately=0: unpausing waits for the next tick instead of running the last one
        timetable=CronTriggerTimetable(CRON, timezone="UTC", run_immediately=timedelta(0)),
        assets=DRIFT_ALERT_ASSET,
    ),
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
        """Fail fast on a request the run cannot honour; skip a stale scheduled tick."""
        context = get_current_context()
        dag_run = context["dag_run"]
        try:
            check_retrain_params(context["params"])
        except ValueError as exc:
            raise AirflowFailException(str(exc)) from None
        print(check_pool_exists(GPU_POOL))
        stale = stale_tick(dag_run.run_type, context.get("logical_date"), datetime.now(UTC), stale_grace())
        if stale:
            print(stale)
            return None
        events = [e for evs in context["triggering_asset_events"].values() for e in evs]
        return retrain_trigger(dag_run.run_type, events)

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
            refuse_backfill_ingest(context["dag_run"].run_type, params["snapshot_id"])
            snapshot_id = resolve_snapshot_id(params["snapshot_id"], context)
            ingested = run_step(ingest_snapshot, params["source"], snapshot_id=snapshot_id, settings=settings)
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

        params = get_current_context()["params"]
        return run_step(
            prepare_dataset, inputs["snapshot_id"], seed=params["seed"], balance=params["balance"],
            settings=task_settings(),
        )

    @task
    def start(prepared: dict) -> str:
        """Record the run's settings; returns the retrain run id (the Airflow run id, made key-safe)."""
        from postergenre.steps.start import start_run

        context = get_current_context()
        config = run_settings_from_params(context["params"], prepared["snapshot_id"])
        started = run_step(start_run, context["run_id"], config, task_settings())
        print(f"retrain run {started['run_id']} at {started['uri']}")
        return started["run_id"]

    @task(queue="gpu", pool=GPU_POOL, execution_timeout=pixel_timeout())
    def embed(retrain_id: str) -> dict:
        pixel_backend()
        from postergenre.steps.embed import embed_step

        return run_step(embed_step, retrain_id, task_settings())

    @task
    def plan(retrain_id: str) -> list[dict]:
        from postergenre.steps.tune import plan_step

        return run_step(plan_step, retrain_id, task_settings())

    @task(map_index_template="{{ trial_label }}")
    def trial(retrain_id: str, trial: dict) -> dict:
        head_backend()
        from postergenre.steps.tune import trial_step

        get_current_context()["trial_label"] = trial_label(trial)
        return run_step(trial_step, retrain_id, trial, task_settings())

    @task(trigger_rule=TriggerRule.NONE_FAILED)
    def halving(retrain_id: str, round_index: int) -> list[dict]:
        """Hyperband's next round: each bracket's best trials of the previous round, with more epochs."""
        from postergenre.steps.tune import halving_step

        return run_step(halving_step, retrain_id, round_index, task_settings())

    @task(trigger_rule=TriggerRule.NONE_FAILED)
    def select(retrain_id: str) -> dict:
        from postergenre.steps.tune import select_step

        return run_step(select_step, retrain_id, task_settings())

    @task
    def ova_genres(retrain_id: str) -> list[str]:
        """The requested (default: every) genre of the dataset: what the ``ova`` group is mapped over."""
        from postergenre.steps.run import run_targets

        available = run_step(run_targets, retrain_id, task_settings())
        try:
            chosen = select_targets(available, get_current_context()["params"]["ova_genres"])
        except ValueError as exc:
            raise AirflowFailException(str(exc)) from None
        return [t for t in chosen if t != CHAMPION_MODEL]

    @task(map_index_template=MODEL_LABEL)
    def train(retrain_id: str, target: str) -> dict:
        head_backend()
        get_current_context()["model_label"] = target
        from postergenre.steps.train import train_step

        return run_step(train_step, retrain_id, target, task_settings())

    @task(queue="gpu", pool=GPU_POOL, execution_timeout=pixel_timeout())
    def fine_tune(retrain_id: str) -> dict:
        pixel_backend()
        from postergenre.steps.finetune import fine_tune_step

        return run_step(fine_tune_step, retrain_id, task_settings())

    @task(map_index_template=MODEL_LABEL)
    def evaluate(retrain_id: str, target: str) -> dict:
        head_backend()
        get_current_context()["model_label"] = target
        from postergenre.steps.evaluate import evaluate_step

        return run_step(evaluate_step, retrain_id, target, task_settings())

    @task(map_index_template=MODEL_LABEL, outlets=[CHAMPION_MOVES])
    def promote(retrain_id: str, target: str) -> dict:
        """Register and promote as decided (or forced); a repeat is a no-op, a dry run registers nothing. A
        moved champion is published on the champions Asset."""
        head_backend()
        from postergenre.steps.promote import promote_step

        context = get_current_context()
        context["model_label"] = target
        params = context["params"]
        promoted = run_step(
            promote_step,
            retrain_id,
            target,
            actor=run_actor(context["dag_run"]),
            force=params["force_promote"],
            force_reason=params["force_reason"],
            settings=task_settings(),
        )
        publish_champion_move(context["outlet_events"], promoted, context["run_id"])
        return promoted

    @task_group(group_id="genre_cnn")
    def genre_cnn(retrain_id: str):
        """The multi-class CNN: the only model that waits for the optional fine-tune."""
        trained = train.override(map_index_template=None)(retrain_id, CHAMPION_MODEL)
        evaluated = evaluate.override(map_index_template=None)(retrain_id, CHAMPION_MODEL)
        trained >> fine_tune(retrain_id) >> evaluated
        evaluated >> promote.override(map_index_template=None)(retrain_id, CHAMPION_MODEL)

    @task_group(group_id="ova")
    def ova(retrain_id: str, target: str):
        """One one-vs-all member: train -> evaluate -> promote, on its own."""
        evaluated = evaluate(retrain_id, target)
        train(retrain_id, target) >> evaluated >> promote(retrain_id, target)

    # Once every model is done, also when one failed; not when the run failed before any model could start.
    @task(trigger_rule=TriggerRule.ALL_DONE_MIN_ONE_SUCCESS)
    def report(retrain_id: str, genres: list[str]) -> dict:
        """The report of whatever finished; then fails if a model of the run reached no decision."""
        from postergenre.genres import model_name
        from postergenre.steps.report import report_step

        summary = run_step(report_step, retrain_id, task_settings())
        missing = [m for m in map(model_name, [CHAMPION_MODEL, *genres]) if m not in summary["decided"]]
        if missing:
            raise AirflowFailException(f"report written, but no decision for {', '.join(missing)}")
        return summary

    inputs = resolve_inputs(gate())
    retrain_id = start(prepare(inputs))
    embedded = embed(retrain_id)
    planned = plan(retrain_id)
    trials = trial.partial(retrain_id=retrain_id).expand(trial=planned)
    for round_index in range(1, TUNING_ROUNDS):  # Hyperband's rounds; a round with no trials is skipped
        kept = halving.override(task_id=f"halving_{round_index}")(retrain_id, round_index)
        trials >> kept
        trials = (
            trial.override(task_id=f"trial_round_{round_index}", trigger_rule=TriggerRule.NONE_FAILED)
            .partial(retrain_id=retrain_id)
            .expand(trial=kept)
        )
    selected = select(retrain_id)
    genres = ova_genres(retrain_id)
    embedded >> planned
    trials >> selected >> genres
    cnn = genre_cnn(retrain_id)
    members = ova.partial(retrain_id=retrain_id).expand(target=genres)
    selected >> cnn
    [cnn, members] >> report(retrain_id, genres)


postergenre_retrain()

"""The ``postergenre_retrain`` DAG: it parses, its shape (fan-outs, pool, schedule, form), its gate, and a real
``dag.test()`` of the whole model plane on a tiny synthetic snapshot with the store and registry on S3.

Needs the ``fixtures.airflow`` plugin (Airflow environment set before airflow is imported). Airflow is only
imported inside tests and fixtures, never at collection.
"""

from __future__ import annotations

import ast
import importlib.util
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
DAG_FILE = REPO_ROOT / "dags" / "postergenre_retrain.py"
ROUNDS = ("trial_round_1", "trial_round_2", "trial_round_3")
MAPPED = ("trial", *ROUNDS)
OVA_GROUP = ("ova.train", "ova.evaluate", "ova.promote")
FORM = {
    "source": ("string", ""),
    "snapshot_id": ("string", ""),
    "n_trials": ("integer", 24),
    "tuning": ("string", "random"),
    "max_epochs": ("integer", 20),
    "backbone": ("string", "efficientnetv2b0"),
    "weights": ("string", "imagenet"),
    "image_size": ("integer", 224),
    "batch_size": ("integer", 128),
    "seed": ("integer", 42),
    "ova_genres": ("array", []),
    "fine_tune": ("boolean", False),
    "fine_tune_blocks": ("integer", 2),
    "fine_tune_learning_rate": ("number", 1e-5),
    "balance": ("string", "undersample"),
    "ova_bags": ("integer", 5),
    "probe_gate": ("boolean", True),
    "dry_run": ("boolean", False),
    "force_promote": ("boolean", False),
    "force_reason": ("string", ""),
}
"""Each param's type and default."""


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAG_FILE.parent))


@pytest.fixture(scope="module")
def retrain(dagbag):
    return dagbag.dags["postergenre_retrain"]


@pytest.fixture(scope="module")
def serialized(retrain):
    """The DAG as the scheduler and API server see it."""
    from airflow.serialization.serialized_objects import DagSerialization

    return DagSerialization.deserialize_dag(DagSerialization.serialize_dag(retrain))


def _event(severity: str | None, snapshot_id: str, minute: int) -> SimpleNamespace:
    extra = {"snapshot_id": snapshot_id} if severity is None else {"snapshot_id": snapshot_id, "severity": severity}
    return SimpleNamespace(extra=extra, timestamp=datetime(2026, 3, 1, 2, minute, tzinfo=UTC))


# --------------------------------------------------------------------------------------------- parsing


def test_retrain_dag_imports_without_errors(dagbag):
    stats = {Path(s.file).name: s for s in dagbag.dagbag_stats}
    stat = stats[DAG_FILE.name]
    print(f"parsed {DAG_FILE.name}: {stat.duration.total_seconds():.3f} s, {stat.dag_num} dag(s), {stat.task_num} tasks")
    assert dagbag.import_errors == {}
    assert stat.dag_num == 1


# --------------------------------------------------------------------------------------------- structure


def test_tasks_run_in_the_model_plane_order(retrain):
    upstream = {t.task_id: t.upstream_task_ids for t in retrain.tasks}
    assert upstream == {
        "gate": set(),
        "resolve_inputs": {"gate"},
        "prepare": {"resolve_inputs"},
        "start": {"prepare"},
        "embed": {"start"},
        "plan": {"start", "embed"},
        "trial": {"start", "plan"},
        "halving_1": {"start", "trial"},
        "trial_round_1": {"start", "halving_1"},
        "halving_2": {"start", "trial_round_1"},
        "trial_round_2": {"start", "halving_2"},
        "halving_3": {"start", "trial_round_2"},
        "trial_round_3": {"start", "halving_3"},
        "select": {"start", "trial_round_3"},
        "ova_genres": {"start", "select"},
        # genre-cnn waits for the optional fine-tune; each one-vs-all member proceeds on its own
        "genre_cnn.train": {"start", "select"},
        "genre_cnn.fine_tune": {"start", "genre_cnn.train"},
        "genre_cnn.evaluate": {"start", "genre_cnn.fine_tune"},
        "genre_cnn.promote": {"start", "genre_cnn.evaluate"},
        "ova.train": {"start", "ova_genres"},
        "ova.evaluate": {"start", "ova_genres", "ova.train"},
        "ova.promote": {"start", "ova_genres", "ova.evaluate"},
        "report": {"start", "ova_genres", "genre_cnn.promote", "ova.promote"},
    }
    from airflow.providers.standard.operators.python import ShortCircuitOperator

    assert isinstance(retrain.get_task("gate"), ShortCircuitOperator)
    # An empty Hyperband round (always so for random search) is skipped; what follows it must still run.
    after_rounds = ("halving_1", "halving_2", "halving_3", *ROUNDS, "select")
    assert all(retrain.get_task(t).trigger_rule == "none_failed" for t in after_rounds)
    # The report is written whatever finished (and then fails the run if a model reached no decision).
    assert retrain.get_task("report").trigger_rule == "all_done_min_one_success"


def test_the_dag_wires_every_round_a_plan_can_have():
    from postergenre import tuning
    from postergenre.dag_support import TUNING_ROUNDS
    from postergenre.run_settings import TUNING_METHODS

    assert (TUNING_ROUNDS, TUNING_METHODS) == (tuning.MAX_ROUNDS, tuning.METHODS)
    assert len(ROUNDS) == TUNING_ROUNDS - 1
    longest = tuning.plan_trials(50, seed=0, method="hyperband", max_epochs=10_000)
    assert max(t["round"] for t in longest) == TUNING_ROUNDS - 1


def test_fan_outs_are_mapped_and_labelled(retrain):
    from airflow.sdk.definitions.mappedoperator import MappedOperator

    mapped = {t.task_id for t in retrain.tasks if isinstance(t, MappedOperator)}
    assert mapped == set(MAPPED)
    for task_id in ("trial", *ROUNDS):
        assert retrain.get_task(task_id).map_index_template == "{{ trial_label }}"
    in_mapped_group = {t.task_id for t in retrain.tasks if t.get_closest_mapped_task_group() is not None}
    assert in_mapped_group == set(OVA_GROUP)  # one mapped task group: one instance per genre
    for task_id in OVA_GROUP:
        assert retrain.get_task(task_id).map_index_template == "{{ model_label }}"


def test_only_embed_and_fine_tune_take_the_gpu_queue_and_pool(retrain):
    from postergenre.task_guards import gpu_pool, pixel_timeout

    pixel = ("embed", "genre_cnn.fine_tune")
    for task_id in pixel:
        task = retrain.get_task(task_id)
        assert (task.queue, task.pool, task.execution_timeout) == ("gpu", gpu_pool(), pixel_timeout())
    others = [t for t in retrain.tasks if t.task_id not in pixel]
    assert all(t.queue != "gpu" and t.execution_timeout < pixel_timeout() for t in others)


def test_the_gpu_pool_is_named_by_the_environment_else_the_default_pool(monkeypatch):
    from postergenre.task_guards import gpu_pool

    monkeypatch.delenv("POSTERGENRE_GPU_POOL", raising=False)
    assert gpu_pool() == "default_pool"  # a fresh Airflow never waits on a pool nobody created
    monkeypatch.setenv("POSTERGENRE_GPU_POOL", "postergenre_gpu")
    assert gpu_pool() == "postergenre_gpu"


def test_schedule_is_weekly_cron_or_a_snapshot_event(retrain):
    from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable
    from airflow.serialization.encoders import coerce_to_core_timetable

    from postergenre.assets import DRIFT_ALERT_ASSET

    assert isinstance(retrain.timetable, AssetOrTimeSchedule)
    assert retrain.timetable.asset_condition == DRIFT_ALERT_ASSET  # alerts only: a quiet night starts nothing
    cron = retrain.timetable.timetable
    assert isinstance(cron, CronTriggerTimetable)
    assert cron.expression == "0 4 * * 0"
    core = coerce_to_core_timetable(cron)
    first = core._get_next(datetime(2026, 3, 4, tzinfo=UTC))
    assert (first.weekday(), first.hour) == (6, 4)  # Sunday 04:00 UTC
    assert core._get_next(first) - first == timedelta(days=7)
    assert retrain.max_active_runs == 1
    assert retrain.catchup is False


def test_unpausing_starts_no_run_for_a_past_tick(serialized):
    """What the scheduler asks when the DAG is first unpaused: the next run is due in the future, never the
    cron tick that has just passed (with a start_date and catchup=False, Airflow would run that one now)."""
    now = datetime.now(UTC)
    info = serialized.next_dagrun_info(last_automated_run_info=None)
    assert info is not None and info.run_after > now
    assert info.run_after - now <= timedelta(days=7)


def test_a_stale_scheduled_tick_is_skipped_not_retrained():
    from postergenre.task_guards import stale_tick

    now, grace = datetime(2026, 3, 9, 12, tzinfo=UTC), timedelta(hours=1)
    assert stale_tick("scheduled", now - timedelta(minutes=5), now, grace) is None
    reason = stale_tick("scheduled", now - timedelta(days=1), now, grace)
    assert reason and "not retraining for a past tick" in reason
    assert stale_tick("manual", now - timedelta(days=30), now, grace) is None  # asked for: always runs
    assert stale_tick("asset_triggered", now - timedelta(days=30), now, grace) is None


def test_a_backfill_never_ingests_todays_export_under_a_past_date():
    from airflow.sdk.exceptions import AirflowFailException

    from postergenre.task_guards import refuse_backfill_ingest

    with pytest.raises(AirflowFailException, match="does not ingest today's export under a past date"):
        refuse_backfill_ingest("backfill", "")
    refuse_backfill_ingest("backfill", "2026-03-01")  # named explicitly: the operator means it
    refuse_backfill_ingest("scheduled", "")


def test_deterministic_errors_fail_without_retry_and_store_errors_retry():
    from airflow.sdk.exceptions import AirflowFailException

    from postergenre.storage import NotFound, StoreUnreachable
    from postergenre.task_guards import run_step

    def raising(exc):
        def step():
            raise exc
        return step

    for exc in (ValueError("bad weights\nmore"), LookupError("no genre"), NotFound("runs/x/config.json")):
        with pytest.raises(AirflowFailException) as caught:
            run_step(raising(exc))
        assert "\n" not in str(caught.value) and str(exc).splitlines()[0] in str(caught.value)
    with pytest.raises(StoreUnreachable):  # transient: Airflow retries it with backoff
        run_step(raising(StoreUnreachable("connection refused")))
    assert run_step(lambda a, b=0: a + b, 1, b=2) == 3


def test_cron_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("POSTERGENRE_RETRAIN_CRON", "30 1 * * 3")
    spec = importlib.util.spec_from_file_location("retrain_dag_with_env_cron", DAG_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.CRON == "30 1 * * 3"
    assert module.postergenre_retrain().timetable.timetable.expression == "30 1 * * 3"


def test_tasks_retry_with_backoff_time_out_and_notify(retrain):
    from postergenre.dag_support import PostergenreNotifier

    for t in retrain.tasks:
        assert t.retries >= 1
        assert t.retry_exponential_backoff > 1
        assert t.max_retry_delay > t.retry_delay
        assert t.execution_timeout is not None
    assert isinstance(retrain.on_failure_callback, PostergenreNotifier)


# --------------------------------------------------------------------------------------------- the form


def test_params_are_typed_documented_with_defaults(retrain):
    params = retrain.params
    assert set(params) == set(FORM)
    for name, (kind, default) in FORM.items():
        param = params.get_param(name)
        assert param.schema["type"] == kind, name
        assert param.value == default, name
        assert param.description and param.schema.get("title"), name
    assert params.get_param("n_trials").schema["minimum"] == 1


def test_backbone_choices_are_the_libraries(retrain):
    """Read from models.py's source: importing it would import Keras (tens of seconds on a busy box)."""
    from postergenre.run_settings import available_backbones

    source = (REPO_ROOT / "postergenre" / "models.py").read_text()
    assigned = next(
        node.value for node in ast.parse(source).body
        if isinstance(node, ast.Assign) and [t.id for t in node.targets if isinstance(t, ast.Name)] == ["BACKBONES"]
    )
    offered = retrain.params.get_param("backbone").schema["enum"]
    assert offered == list(available_backbones()) and set(offered) == set(ast.literal_eval(assigned))


def test_the_production_form_does_not_offer_the_test_backbone(monkeypatch):
    monkeypatch.delenv("POSTERGENRE_TEST_BACKBONES", raising=False)
    spec = importlib.util.spec_from_file_location("retrain_dag_production_form", DAG_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.postergenre_retrain().params.get_param("backbone").schema["enum"] == [
        "efficientnetv2b0", "resnet50", "lite0"
    ]


@pytest.mark.parametrize(
    ("conf", "valid"),
    [
        ({"backbone": "tiny", "weights": "none", "image_size": 48, "n_trials": 2}, True),
        ({"weights": "s3://models/backbones/effnet.weights.h5"}, True),
        ({"weights": "/opt/weights/resnet50.weights.h5", "backbone": "resnet50"}, True),
        ({"backbone": "vgg16"}, False),
        ({"weights": "resnet50.h5"}, False),
        ({"n_trials": 0}, False),
        ({"max_epochs": 0}, False),
        ({"snapshot_id": "../etc"}, False),
        ({"dry_run": "yes"}, False),
        ({"ova_genres": ["Comedy", "Science Fiction"]}, True),
        ({"ova_genres": ["Cartoons"]}, False),
        ({"ova_genres": ["Comedy", "Comedy"]}, False),
        ({"tuning": "hyperband", "fine_tune": True, "fine_tune_blocks": 3}, True),
        ({"tuning": "bayesian"}, False),
        ({"fine_tune_blocks": 0}, False),
        ({"fine_tune_learning_rate": 0}, False),
        ({"fine_tune_learning_rate": 0.5}, False),
    ],
)
def test_trigger_form_rejects_what_the_run_cannot_use(serialized, conf, valid):
    """Validated as the API does when a run is triggered: the serialized DAG's params merged with the conf."""
    from airflow.exceptions import ParamValidationError

    params = serialized.params.deep_merge(conf)
    if valid:
        resolved = params.validate()
        assert all(resolved[k] == v for k, v in conf.items())
    else:
        with pytest.raises(ParamValidationError):
            params.validate()


# --------------------------------------------------------------------------------------------- gate helpers


def test_time_triggered_and_manual_runs_always_retrain():
    from postergenre.dag_support import retrain_trigger

    for run_type in ("scheduled", "manual", "backfill"):
        assert retrain_trigger(run_type, []) == {"trigger": run_type, "snapshot_id": None}


def test_snapshot_events_retrain_only_on_an_alert_and_on_the_newest_alert():
    from postergenre.dag_support import retrain_trigger

    quiet = [_event("ok", "s1", 1), _event("warn", "s2", 2), _event(None, "s3", 3)]
    assert retrain_trigger("asset_triggered", quiet) is None
    assert retrain_trigger("asset_triggered", []) is None
    alerts = [*quiet, _event("alert", "s4", 9), _event("alert", "s5", 5), _event("warn", "s6", 10)]
    decision = retrain_trigger("asset_triggered", alerts)
    assert decision == {"trigger": "asset_triggered", "snapshot_id": "s4", "severity": "alert"}


def test_unaudited_forced_promotions_are_refused():
    from postergenre.dag_support import check_retrain_params

    check_retrain_params({"fine_tune": False, "force_promote": False, "force_reason": ""})
    check_retrain_params({"fine_tune": True, "force_promote": True, "force_reason": "bootstrap"})
    with pytest.raises(ValueError, match="'tiny' has no ImageNet weights"):  # what per-field checks can't see
        check_retrain_params({"backbone": "tiny", "weights": "imagenet", "force_promote": False})
    for reason in ("", "   "):
        with pytest.raises(ValueError, match="force_promote=true needs a force_reason"):
            check_retrain_params({"fine_tune": False, "force_promote": True, "force_reason": reason})


def test_targets_are_the_cnn_plus_the_requested_or_every_genre():
    from postergenre.dag_support import select_targets

    available = ["genre-cnn", "Action", "Comedy", "Drama"]
    assert select_targets(available, []) == available
    assert select_targets(available, ["Drama", "Action"]) == ["genre-cnn", "Action", "Drama"]
    with pytest.raises(ValueError, match="Western not in this snapshot"):
        select_targets(available, ["Comedy", "Western"])


def test_trial_label_and_actor():
    from postergenre.dag_support import run_actor, trial_label

    assert trial_label({"trial_id": "t003", "hp": {"units": 256, "dropout": True}}) == "t003 units=256 dropout"
    assert trial_label({"trial_id": "t001", "hp": {"units": 64, "dropout": False}}) == "t001 units=64 no-dropout"
    promoted = {"trial_id": "t012", "hp": {"units": 64, "dropout": False}, "bracket": 0, "round": 1, "epochs": 3}
    assert trial_label(promoted) == "t012 units=64 no-dropout b0r1 3ep"
    assert run_actor(SimpleNamespace(triggering_user_name="alice", run_id="manual__x")) == "alice"
    assert run_actor(SimpleNamespace(triggering_user_name=None, run_id="scheduled__x")) == "scheduled__x"


# --------------------------------------------------------------------------------------------- dag.test


def _no_retries(dag, monkeypatch) -> None:
    """A failure should fail the test now, not after minutes of retry backoff."""
    for t in dag.tasks:
        monkeypatch.setattr(t, "retries", 0)


def _conf(**values) -> dict:
    """A complete run conf. In one process, Airflow writes a run's conf into the DAG's shared Param objects,
    so a later ``dag.test()`` that left a param out would inherit the previous run's value."""
    return {**{name: default for name, (_, default) in FORM.items()}, **values}


def _states(dr) -> dict[str, list[str]]:
    states: dict[str, list[str]] = {}
    for ti in sorted(dr.get_task_instances(), key=lambda ti: (ti.task_id, ti.map_index)):
        states.setdefault(ti.task_id, []).append(ti.state)
    return states


def _dag_parsed_with(monkeypatch, **env):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    spec = importlib.util.spec_from_file_location(f"retrain_dag_{abs(hash(tuple(env.items())))}", DAG_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.postergenre_retrain()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("conf", "env", "message"),
    [
        ({"force_promote": True, "force_reason": " "}, {}, "force_promote=true needs a force_reason"),
        ({"backbone": "tiny", "weights": "imagenet"}, {}, "'tiny' has no ImageNet weights"),
        ({}, {"POSTERGENRE_GPU_POOL": "no_such_gpu_pool"}, "pool 'no_such_gpu_pool' does not exist"),
    ],
    ids=["unaudited-force", "backbone-without-weights", "missing-pool"],
)
def test_refused_requests_fail_in_the_first_task(retrain, airflow_db, settings, monkeypatch, conf, env, message):
    """Nothing runs, nothing is retried: the gate fails with the reason and everything after it is upstream_failed."""
    dag = _dag_parsed_with(monkeypatch, **env) if env else retrain
    _no_retries(dag, monkeypatch)
    errors: list[BaseException] = []
    monkeypatch.setattr(dag.get_task("gate"), "on_failure_callback", [lambda ctx: errors.append(ctx["exception"])])
    day = 2 + list(sorted(message)).count(" ")  # a distinct logical date per case
    dr = dag.test(logical_date=datetime(2026, 2, day, 4, tzinfo=UTC), run_conf=_conf(**conf))
    states = _states(dr)
    assert dr.state == "failed"
    assert states.pop("gate") == ["failed"]
    assert all(s == ["upstream_failed"] for s in states.values()), states
    assert len(errors) == 1 and message in str(errors[0])


def _fan_out_times(dr, task_id: str) -> tuple[int, float, float]:
    """(instances, summed task durations, wall span first start -> last end) of one task, from the DB."""
    tis = [ti for ti in dr.get_task_instances() if ti.task_id == task_id]
    total = sum(ti.duration or 0.0 for ti in tis)
    span = (max(ti.end_date for ti in tis) - min(ti.start_date for ti in tis)).total_seconds()
    return len(tis), total, span


def _champion_events(run_id: str) -> list[dict]:
    """The extras of the champions Asset's events that ``run_id`` published."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from postergenre.assets import CHAMPIONS_ASSET

    with create_session() as session:
        stmt = (
            select(AssetEvent.extra)
            .join(AssetModel, AssetModel.id == AssetEvent.asset_id)
            .where(AssetModel.uri == CHAMPIONS_ASSET.uri, AssetEvent.source_run_id == run_id)
            .order_by(AssetEvent.id)
        )
        return list(session.scalars(stmt))


def _labels(dr, task_id: str) -> list[str]:
    tis = sorted((ti for ti in dr.get_task_instances() if ti.task_id == task_id), key=lambda ti: ti.map_index)
    return [ti.rendered_map_index for ti in tis]


@pytest.mark.slow
def test_retrain_dag_test_end_to_end_on_s3(retrain, airflow_db, settings, s3_server, s3_env, tmp_path, monkeypatch):
    from postergenre import registry
    from postergenre.config import Settings
    from postergenre.dag_support import trial_label
    from postergenre.genres import CNN_MODEL as CNN
    from postergenre.genres import model_name as registry_name
    from postergenre.steps.layout import RunLayout
    from postergenre.storage import open_store
    from postergenre.synth import generate_snapshot

    for bucket in ("retrain-data", "retrain-registry"):
        s3_server.create_bucket(bucket)
    monkeypatch.setenv("POSTERGENRE_STORE_URL", "s3://retrain-data/store")
    monkeypatch.setenv("POSTERGENRE_REGISTRY_URL", "s3://retrain-registry/models")
    env_settings = Settings()
    store, reg = open_store(env_settings.store_url), open_store(env_settings.registry_url)
    _no_retries(retrain, monkeypatch)
    export = generate_snapshot(tmp_path / "export", movies=2000, seed=5).out
    # genre-cnn and two one-vs-all members: each member adds ~20 s of training per run on a busy 2-core box.
    targets = [CNN, "Action", "Drama"]
    tiny = _conf(backbone="tiny", weights="none", image_size=48, n_trials=2, max_epochs=6, ova_genres=targets[1:])

    def run(day: int, conf: dict):
        started = time.perf_counter()
        dr = retrain.test(logical_date=datetime(2026, 3, day, 4, tzinfo=UTC), run_conf=conf)
        wall = time.perf_counter() - started
        states = _states(dr)
        assert dr.state == "success", states
        print(f"\n{dr.run_id}: dag.test {wall:.1f} s")
        for task_id in ("embed", "trial", "genre_cnn.train", "ova.train", "ova.evaluate", "ova.promote"):
            n, total, span = _fan_out_times(dr, task_id)
            print(f"  {task_id:<9} x{n:<3} task time {total:7.1f} s, wall span {span:7.1f} s")
        return dr

    # First run: ingest the export; a forced promotion (audited) bootstraps every champion.
    first = run(1, {**tiny, "source": str(export), "snapshot_id": "synth",
                    "force_promote": True, "force_reason": "bootstrap champions"})
    plan = store.get_json(f"runs/{registry.run_version_id(first.run_id)}/plan.json")
    assert _labels(first, "trial") == [trial_label(t) for t in plan]
    assert _labels(first, "ova.train") == targets[1:]  # one instance of the ova group per genre
    run_key = f"runs/{registry.run_version_id(first.run_id)}"
    report = store.get_json(f"{run_key}/report.json")
    assert set(report["decisions"]) == {registry_name(t) for t in targets}
    assert store.exists(f"{run_key}/report.md")
    champions = {}
    for target in targets:
        name = registry_name(target)
        decision = store.get_json(RunLayout(registry.run_version_id(first.run_id)).decision(registry_name(target)))
        champion = registry.get_champion(reg, name)
        assert champion is not None and champion["version"] == registry.run_version_id(first.run_id), name
        last = registry.history(reg, name)[-1]
        assert last["actor"] == "dag_test"  # dag.test's triggering user
        if decision["promote"]:
            assert last["reason"] == decision["reason"]
        else:
            assert last["reason"] == "forced by dag_test: bootstrap champions"
        champions[name] = champion["version"]
    forced = sum(not store.get_json(RunLayout(registry.run_version_id(first.run_id)).decision(registry_name(t)))["promote"] for t in targets)
    print(f"  first run: {len(targets) - forced} promoted on merit, {forced} forced")
    # Each champion move was published for downstream DAGs, with what they need to act on it.
    moves = {e["model"]: e for e in _champion_events(first.run_id)}
    assert set(moves) == set(champions)
    for name, extra in moves.items():
        assert extra["version"] == champions[name] and extra["previous_version"] is None
        assert extra["decision_uri"] == f"{store.url.rstrip('/')}/{RunLayout(extra['version']).decision(name)}"
        assert extra["run_id"] == first.run_id and extra["generation"] == 1

    # Second run, dry, no snapshot named: trains on the newest one (the same) and changes nothing. It tunes
    # with Hyperband (2 configurations for 2 epochs, the better one again for 6) and fine-tunes genre-cnn.
    second = run(2, {**tiny, "dry_run": True, "tuning": "hyperband", "fine_tune": True, "fine_tune_learning_rate": 1e-3})
    second_key = f"runs/{registry.run_version_id(second.run_id)}"
    assert store.get_json(f"{second_key}/config.json")["snapshot_id"] == "synth"
    states = _states(second)
    assert states["trial"] == ["success"] * 2 and states["trial_round_1"] == ["success"]
    assert states["trial_round_2"] == states["trial_round_3"] == ["skipped"]
    plan = store.get_json(f"{second_key}/plan.json")
    survivor = store.get_json(f"{second_key}/rounds/1.json")
    round_0 = [store.get_json(f"{second_key}/trials/{t['trial_id']}.json") for t in plan if t["round"] == 0]
    assert survivor[0]["hp"] == min(round_0, key=lambda r: r["val_cross_entropy"])["hp"] and survivor[0]["epochs"] == 6
    assert _labels(second, "trial_round_1") == [trial_label(survivor[0])]
    fine_tuned = store.get_json(f"{second_key}/candidates/genre-cnn/fine_tune.json")
    assert fine_tuned["fine_tuned"] == (
        fine_tuned["val_cross_entropy"] < fine_tuned["val_cross_entropy_before"]
    )
    candidate = store.get_json(f"{second_key}/candidates/genre-cnn/candidate.json")
    assert ("fine_tune" in candidate) == fine_tuned["fine_tuned"]  # the candidate is replaced only when it pays
    for target in targets:
        name = registry_name(target)
        decision = store.get_json(RunLayout(registry.run_version_id(second.run_id)).decision(registry_name(target)))
        assert decision["champion_version"] == champions[name]
        assert registry.get_champion(reg, name)["version"] == champions[name]
        assert [v["version"] for v in registry.list_versions(reg, name)] == [champions[name]]
    assert store.exists(f"{second_key}/report.md")
    assert _champion_events(second.run_id) == []  # a dry run moves no champion, so it publishes nothing

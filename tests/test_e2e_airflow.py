"""End to end through Airflow's own processes: api-server, scheduler and dag-processor on loopback
(:class:`support.airflow_stack.AirflowStack`), driven only over the public REST API, with the data
store and the registry on the real S3 server.

The monitor ingests a new synthetic snapshot and measures its drift against an earlier one; then a manual
``postergenre_retrain`` run with non-default Params (a JWT-authenticated ``POST .../dagRuns`` with ``conf``)
trains and force-promotes every model. The test process never imports airflow for this: the stack is separate
processes. The pure helpers (state summary, timing breakdown) are tested on their own, fast.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from support.airflow_stack import AirflowStack, format_timings, run_timings, summarise_states

REPO_ROOT = Path(__file__).resolve().parents[1]
MONITOR, RETRAIN = "postergenre_monitor", "postergenre_retrain"


def _ti(task_id, state, start, end, *, map_index=-1, queued=None, label=None):
    stamp = "2026-03-01T04:00:{:02d}+00:00".format
    return {
        "task_id": task_id,
        "state": state,
        "map_index": map_index,
        "rendered_map_index": label,
        "start_date": stamp(start) if start is not None else None,
        "end_date": stamp(end) if end is not None else None,
        "queued_when": stamp(queued) if queued is not None else None,
        "duration": float(end - start) if start is not None and end is not None else None,
    }


# --------------------------------------------------------------------------------------------- helpers


def test_state_summary_counts_mapped_instances_per_state():
    tis = [
        _ti("start", "success", 0, 1),
        *[_ti("train", "success", 1, 2, map_index=i) for i in range(3)],
        _ti("train", "running", 2, None, map_index=3),
        _ti("train", None, None, None, map_index=4),
    ]
    line = summarise_states(tis)
    assert "start=success" in line
    assert "train x5 {none: 1, running: 1, success: 3}" in line


def test_timings_split_wall_time_into_task_time_and_gaps():
    run = {
        "queued_at": "2026-03-01T03:59:58+00:00",
        "start_date": "2026-03-01T04:00:00+00:00",
        "end_date": "2026-03-01T04:00:30+00:00",
    }
    tis = [
        _ti("a", "success", 2, 6, queued=1),
        _ti("b", "success", 8, 14, map_index=0, queued=7),  # overlapping pair: 8..16 busy
        _ti("b", "success", 10, 16, map_index=1, queued=7),
        _ti("c", "success", 20, 28, queued=19),
        _ti("d", "skipped", None, None),
    ]
    timings = run_timings(run, tis)
    assert timings["wall_s"] == 30 and timings["queued_s"] == 2
    assert timings["busy_s"] == 4 + 8 + 8  # union of intervals, overlap counted once
    assert timings["idle_s"] == 30 - 20
    assert timings["task_s"] == 4 + 6 + 6 + 8 and timings["tasks"] == 4
    stages = {s["task_id"]: s for s in timings["stages"]}
    assert [s["task_id"] for s in timings["stages"]] == ["a", "b", "c"]
    assert stages["b"] == {"task_id": "b", "n": 2, "task_s": 12.0, "span_s": 8.0, "queued_wait_s": 2.0,
                           "gap_before_s": 2.0}
    assert stages["a"]["gap_before_s"] == 2 and stages["c"]["gap_before_s"] == 4
    text = format_timings(timings)
    assert all(task in text for task in ("a", "b", "c")) and "30.0 s" in text


_STUBBORN = """
import signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300)"
child = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
print(child.pid, flush=True)
time.sleep(300)
"""


def test_stop_kills_components_and_their_tasks_in_other_sessions(settings):
    """Like a task supervisor's child: a grandchild in its own session that ignores SIGTERM."""
    stack = AirflowStack(settings, REPO_ROOT, stop_timeout=0.5)
    component = subprocess.Popen(
        [sys.executable, "-c", _STUBBORN], stdout=subprocess.PIPE, start_new_session=True
    )
    task = psutil.Process(int(component.stdout.readline()))
    stack._procs["stub"] = component  # white box: a component without starting Airflow
    stack.stop()
    assert component.returncode is not None
    task_gone = not task.is_running() or task.status() == psutil.STATUS_ZOMBIE
    assert task_gone


# --------------------------------------------------------------------------------------------- the stack


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_monitor_and_retrain_through_airflow_rest_api_on_s3(s3_server, s3_env, tmp_path):
    from postergenre import db, registry
    from postergenre.config import Settings
    from postergenre.dag_support import trial_label
    from postergenre.genres import CNN_MODEL as CNN
    from postergenre.genres import model_name as registry_name
    from postergenre.steps.ingest import ingest_snapshot
    from postergenre.steps.layout import RunLayout
    from postergenre.steps.run import all_targets
    from postergenre.storage import open_store
    from postergenre.synth import generate_snapshot

    suffix = secrets.token_hex(4)
    data_bucket, registry_bucket = f"e2e-data-{suffix}", f"e2e-registry-{suffix}"
    for bucket in (data_bucket, registry_bucket):
        s3_server.create_bucket(bucket)
    settings = Settings(
        home=tmp_path / "home", store_url=f"s3://{data_bucket}/store", registry_url=f"s3://{registry_bucket}/models"
    )
    store, reg = open_store(settings.store_url), open_store(settings.registry_url)
    earlier = generate_snapshot(tmp_path / "export-1", movies=600, seed=1).out
    export = generate_snapshot(tmp_path / "export-2", movies=2500, seed=7).out
    ingest_snapshot(str(earlier), snapshot_id="e2e-1", settings=settings)
    conf = {
        "source": str(export),
        "snapshot_id": "e2e-2",
        "n_trials": 2,
        "tuning": "hyperband",  # R = 3, eta = 3: two configurations for 1 epoch, the better one again for 3
        "max_epochs": 3,
        "fine_tune": True,
        "fine_tune_blocks": 1,
        "fine_tune_learning_rate": 1e-3,
        "backbone": "tiny",
        "weights": "none",
        "image_size": 48,
        "seed": 7,
        "force_promote": True,
        "force_reason": "e2e bootstrap",
        # genre-cnn and three one-vs-all members: all 19 would add minutes of mapped tasks, not coverage.
        "ova_genres": ["Comedy", "Drama", "Horror"],
    }

    # No time- or asset-triggered runs: unpausing a DAG whose start_date is in the past at once creates a run
    # for the latest cron tick, with default Params (catchup=False still runs the most recent tick), and the
    # monitor's snapshot event would trigger the retrain. Manual runs are scheduled as usual.
    no_schedules = {"AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False"}
    with AirflowStack(settings, REPO_ROOT, extra_env={**s3_env, **no_schedules}) as stack:
        monitor_run = stack.trigger(MONITOR, {"source": str(export), "snapshot_id": "e2e-2"})
        assert stack.wait(MONITOR, monitor_run, timeout=300) == "success"
        monitor_tis = {ti["task_id"]: ti["state"] for ti in stack.task_instances(MONITOR, monitor_run)}
        assert monitor_tis["drift_vs_champion"] == "skipped"  # no champion yet
        events = stack.request("GET", "/api/v2/assets/events", params={"source_dag_id": MONITOR})["asset_events"]
        by_asset = {}
        for event in events:
            by_asset.setdefault(event["uri"].rstrip("/"), []).append(event["extra"])
        assert [e["snapshot_id"] for e in by_asset["postergenre://snapshots"]] == ["e2e-2"]
        # A drift-alert event exactly when the snapshot's drift is an alert.
        alerting = by_asset["postergenre://snapshots"][0]["severity"] == "alert"
        assert by_asset.get("postergenre://drift-alerts", []) == (by_asset["postergenre://snapshots"] if alerting else [])

        started = time.monotonic()
        run_id = stack.trigger(RETRAIN, conf)
        state = stack.wait(RETRAIN, run_id, timeout=900)
        client_wall = time.monotonic() - started
        dag_run = stack.dag_run(RETRAIN, run_id)
        tis = stack.task_instances(RETRAIN, run_id)
        timings = run_timings(dag_run, tis)
        champion_moves = [
            e["extra"]
            for e in stack.request("GET", "/api/v2/assets/events", params={"source_dag_id": RETRAIN})["asset_events"]
            if e["uri"].rstrip("/") == "postergenre://champions"
        ]
        print(f"\n{RETRAIN} {run_id}: {state}, {client_wall:.0f} s from trigger to seen finished")
        print(format_timings(timings))
    assert state == "success"
    assert dag_run["conf"] == conf and dag_run["run_type"] == "manual"

    # The run's Params reached the tasks: the retrain's recorded configuration is the non-default one.
    retrain_id = registry.run_version_id(run_id)
    run_key = f"runs/{retrain_id}"
    config = store.get_json(f"{run_key}/config.json")
    assert {k: config[k] for k in ("snapshot_id", "n_trials", "tuning", "max_epochs", "backbone", "weights",
                                   "image_size", "seed", "fine_tune", "fine_tune_blocks", "dry_run")} == {
        "snapshot_id": "e2e-2", "n_trials": 2, "tuning": "hyperband", "max_epochs": 3, "backbone": "tiny",
        "weights": "none", "image_size": 48, "seed": 7, "fine_tune": True, "fine_tune_blocks": 1, "dry_run": False,
    }
    plan = store.get_json(f"{run_key}/plan.json")
    by_task: dict[str, list[dict]] = {}
    for ti in tis:
        by_task.setdefault(ti["task_id"], []).append(ti)
    report = store.get_json(f"{run_key}/report.json")
    targets = [t for t in all_targets(report["classes"]) if t == CNN or t in conf["ova_genres"]]
    assert len(targets) == 1 + len(conf["ova_genres"])
    assert [(t["round"], t["epochs"]) for t in plan] == [(0, 1), (0, 1), (1, 3)]
    assert sorted(ti["rendered_map_index"] for ti in by_task["trial"]) == sorted(trial_label(t) for t in plan[:2])
    survivor = store.get_json(f"{run_key}/rounds/1.json")
    assert [ti["rendered_map_index"] for ti in by_task["trial_round_1"]] == [trial_label(survivor[0])]
    for step in ("train", "evaluate", "promote"):  # genre-cnn's group, and one ova group instance per genre
        assert len(by_task[f"genre_cnn.{step}"]) == 1, step
        assert sorted(ti["rendered_map_index"] for ti in by_task[f"ova.{step}"]) == sorted(conf["ova_genres"]), step
    beyond_the_plan = {"trial_round_2", "trial_round_3"}  # a bracket of R = 3 has two rounds
    assert all(ti["state"] == "skipped" for ti in tis if ti["task_id"] in beyond_the_plan)
    assert all(ti["state"] == "success" for ti in tis if ti["task_id"] not in beyond_the_plan)
    fine_tuned = store.get_json(f"{run_key}/candidates/genre-cnn/fine_tune.json")
    assert fine_tuned["fine_tuned"] == (fine_tuned["val_loss"] < fine_tuned["val_loss_before"])

    # Every model has a decision, a registered version as champion, and an alias entry by the REST user.
    assert set(report["decisions"]) == {registry_name(t) for t in targets}
    assert store.exists(f"{run_key}/report.md")
    forced = 0
    for target in targets:
        name = registry_name(target)
        decision = store.get_json(RunLayout(retrain_id).decision(name))
        assert decision["champion_version"] is None and decision["model"] == name
        champion = registry.get_champion(reg, name)
        assert champion is not None and champion["version"] == retrain_id, name
        entry = registry.history(reg, name)[-1]
        assert entry["actor"] == "admin"
        if decision["promote"]:
            assert entry["reason"] == decision["reason"]
        else:
            forced += 1
            assert entry["reason"] == "forced by admin: e2e bootstrap"
        lineage = registry.show_version(reg, name, retrain_id)["lineage"]
        assert lineage["snapshot_id"] == "e2e-2" and lineage["seed"] == 7 and lineage["image_size"] == 48
        # Which Airflow task produced it, and from which commit.
        assert lineage["airflow"]["dag_id"] == RETRAIN and lineage["airflow"]["run_id"] == run_id
        assert lineage["git_sha"]
    untrained = [g for g in report["classes"] if g not in conf["ova_genres"]]
    assert untrained and all(registry.get_champion(reg, registry_name(g)) is None for g in untrained)
    print(f"{len(targets)} models: {len(targets) - forced} promoted on merit, {forced} forced")
    # Every champion move was published on the champions Asset for downstream DAGs.
    assert sorted((m["model"], m["version"], m["previous_version"]) for m in champion_moves) == sorted(
        (registry_name(t), retrain_id, None) for t in targets
    )

    # The monitor's drift report of e2e-2 against e2e-1: in the store and in the metadata DB.
    drift_key = "drift/e2e-2/previous-e2e-1.json"
    stored = store.get_json(drift_key)
    assert stored["snapshot_id"] == "e2e-2" and stored["baseline_id"] == "e2e-1"
    engine = db.make_engine(settings.db_url)
    try:
        with db.session_scope(engine) as session:
            rows = [(r.snapshot_id, r.baseline_id, r.kind, r.severity, r.report_uri) for r in db.drift_history(session)]
    finally:
        engine.dispose()
    assert rows == [("e2e-2", "e2e-1", "previous", stored["severity"], f"{store.url.rstrip('/')}/{drift_key}")]

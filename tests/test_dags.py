"""The DAG folder: every file parses (fast, without heavy imports), the monitor's shape, and a real
``dag.test()`` of ``postergenre_monitor`` on two tiny synthetic snapshots.

Needs the ``fixtures.airflow`` plugin (Airflow environment set before airflow is imported). Airflow is only
imported inside tests and fixtures, never at collection.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from support.airflow_env import airflow_env, passwords_file

REPO_ROOT = Path(__file__).resolve().parents[1]
DAGS = REPO_ROOT / "dags"
HEAVY_MODULES = ("tensorflow", "keras", "pandas")


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS))


@pytest.fixture(scope="module")
def monitor(dagbag):
    return dagbag.dags["postergenre_monitor"]


class _Webhook(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict]]]:
    """A loopback HTTP server collecting the JSON bodies POSTed to it."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Webhook)
    server.received = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hook", server.received
    server.shutdown()
    thread.join()


# --------------------------------------------------------------------------------------------- parsing


def test_every_dag_file_imports_without_errors(dagbag):
    files = sorted(p.name for p in DAGS.glob("*.py") if not p.name.startswith("_"))
    for stat in dagbag.dagbag_stats:
        print(f"parsed {Path(stat.file).name}: {stat.duration.total_seconds():.3f} s, {stat.dag_num} dag(s)")
    assert dagbag.import_errors == {}
    assert sorted(Path(s.file).name for s in dagbag.dagbag_stats) == files
    assert all(s.dag_num >= 1 for s in dagbag.dagbag_stats)


@pytest.mark.slow
def test_parsing_the_dag_folder_imports_no_heavy_module():
    """The dag processor re-parses every file often: TensorFlow or pandas at top level would cost seconds."""
    code = (
        "import json, sys\n"
        "from airflow.dag_processing.dagbag import DagBag\n"
        f"bag = DagBag(dag_folder={str(DAGS)!r})\n"
        "assert not bag.import_errors, bag.import_errors\n"
        f"print(json.dumps(sorted(m for m in {HEAVY_MODULES!r} if m in sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


# --------------------------------------------------------------------------------------------- structure


def test_monitor_tasks_and_dependencies(monitor):
    upstream = {t.task_id: t.upstream_task_ids for t in monitor.tasks}
    assert upstream == {
        "ingest": set(),
        "drift_vs_previous": {"ingest"},
        "drift_vs_champion": {"ingest", "drift_vs_previous"},
        "publish": {"ingest", "drift_vs_previous", "drift_vs_champion"},
    }
    # A skipped champion comparison (no champion yet) must not stop the snapshot's event.
    assert monitor.get_task("publish").trigger_rule == "none_failed"
    from postergenre.assets import DRIFT_ALERTS, SNAPSHOTS_ASSET

    # Every night's snapshot event, plus an alert event through the alias only when drift is an alert.
    assert monitor.get_task("publish").outlets == [SNAPSHOTS_ASSET, DRIFT_ALERTS]


def test_monitor_schedule_and_run_limits(monitor):
    from airflow.sdk import CronTriggerTimetable
    from airflow.serialization.encoders import coerce_to_core_timetable

    assert isinstance(monitor.timetable, CronTriggerTimetable)
    # Nightly: consecutive fire times are one day apart (asked of the scheduler's side of the timetable).
    core = coerce_to_core_timetable(monitor.timetable)
    first = core._get_next(datetime(2026, 3, 1, tzinfo=UTC))
    assert core._get_next(first) - first == timedelta(days=1)
    assert monitor.catchup is False
    assert monitor.max_active_runs == 1


def test_monitor_params_have_defaults_types_and_descriptions(monitor):
    params = monitor.params
    assert set(params) == {"source", "snapshot_id"}
    for name in params:
        param = params.get_param(name)
        assert param.schema["type"] == "string"
        assert param.description
    assert params["snapshot_id"] == ""


def test_monitor_tasks_retry_with_backoff_and_time_out(monitor):
    for t in monitor.tasks:
        assert t.retries >= 1
        assert t.retry_exponential_backoff > 1
        assert t.max_retry_delay is not None and t.max_retry_delay > t.retry_delay
        assert t.execution_timeout is not None


# --------------------------------------------------------------------------------------------- helpers


@pytest.mark.parametrize(
    "candidate", ["2026-11-24", "a", "A.b_c-1", "x" * 64, "x" * 65, "-lead", ".hidden", "has space", "a/b", ""]
)
def test_snapshot_id_param_pattern_agrees_with_the_library(candidate):
    from postergenre.dag_support import SNAPSHOT_ID_PATTERN
    from postergenre.snapshots import validate_snapshot_id

    try:
        library_ok = bool(validate_snapshot_id(candidate))
    except ValueError:
        library_ok = False
    form_ok = re.search(SNAPSHOT_ID_PATTERN, candidate) is not None
    assert form_ok == (library_ok or candidate == "")  # "" means "the run's date"


def test_resolve_snapshot_id_prefers_request_then_logical_date_then_run_after():
    from types import SimpleNamespace

    from postergenre.dag_support import resolve_snapshot_id

    run = SimpleNamespace(run_after=datetime(2026, 5, 6, 7, 8, tzinfo=UTC))
    assert resolve_snapshot_id("mine", {"logical_date": datetime(2026, 1, 2, tzinfo=UTC)}) == "mine"
    assert resolve_snapshot_id("", {"logical_date": datetime(2026, 1, 2, 23, 59, tzinfo=UTC)}) == "2026-01-02"
    assert resolve_snapshot_id("", {"logical_date": None, "dag_run": run}) == "2026-05-06"


def test_source_param_default_comes_from_the_environment(monkeypatch):
    from postergenre.dag_support import SOURCE_ENV, source_param

    monkeypatch.setenv(SOURCE_ENV, "s3://exports/latest")
    assert source_param().value == "s3://exports/latest"
    monkeypatch.delenv(SOURCE_ENV)
    assert source_param().value == ""


def test_notifier_posts_json_to_the_configured_webhook(webhook, monkeypatch):
    from postergenre.dag_support import WEBHOOK_ENV, PostergenreNotifier

    url, received = webhook
    monkeypatch.setenv(WEBHOOK_ENV, url)
    PostergenreNotifier("drift alert on {{ run_id }}", details={"severity": "alert"})({"run_id": "r1"})
    assert len(received) == 1
    assert received[0]["text"] == "drift alert on r1"
    assert received[0]["run_id"] == "r1"
    assert received[0]["details"] == {"severity": "alert"}


def test_notifier_without_webhook_or_with_a_dead_one_does_not_raise(monkeypatch):
    from postergenre.dag_support import WEBHOOK_ENV, PostergenreNotifier

    monkeypatch.delenv(WEBHOOK_ENV, raising=False)
    PostergenreNotifier("only logged")({})
    dead = PostergenreNotifier("unreachable", webhook_url="http://127.0.0.1:9/none", timeout=2)
    dead({})


def test_airflow_env_keeps_everything_under_the_home_and_shells_out(settings, tmp_path):
    env = airflow_env(settings, REPO_ROOT, port=8181)
    home = Path(env["AIRFLOW_HOME"])
    assert home == settings.home / "airflow"
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == str(DAGS)
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == f"sqlite:///{home / 'airflow.db'}"
    assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"] == str(passwords_file(settings))
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"].startswith("http://localhost:8181/")
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"
    assert int(env["AIRFLOW__CORE__PARALLELISM"]) <= 4
    assert env["POSTERGENRE_STORE_URL"] == settings.store_url

    script = f"eval \"$({sys.executable} -m support.airflow_env {REPO_ROOT} 8181)\"; echo \"$AIRFLOW_HOME\""
    shell_env = {**os.environ, "POSTERGENRE_HOME": str(settings.home), "PYTHONPATH": str(REPO_ROOT / "tests")}
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True, env=shell_env)
    assert out.stdout.strip() == str(home)


# --------------------------------------------------------------------------------------------- dag.test


def _asset_events(run_ids: list[str], asset=None) -> list:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from postergenre.assets import SNAPSHOTS_ASSET

    uri = (asset or SNAPSHOTS_ASSET).uri
    with create_session() as session:
        stmt = (
            select(AssetEvent)
            .join(AssetModel, AssetModel.id == AssetEvent.asset_id)
            .where(AssetModel.uri == uri, AssetEvent.source_run_id.in_(run_ids))
            .order_by(AssetEvent.id)
        )
        events = session.scalars(stmt).all()
        session.expunge_all()
    return events


@pytest.mark.slow
def test_monitor_dag_test_on_two_snapshots(monitor, airflow_db, settings, tmp_path, webhook, monkeypatch):
    from postergenre import db, registry
    from postergenre.storage import open_store
    from postergenre.synth import generate_snapshot

    url, alerts = webhook
    monkeypatch.setenv("POSTERGENRE_ALERT_WEBHOOK_URL", url)
    # Any change between two nights is an alert here, so the second night publishes one for sure.
    monkeypatch.setenv("POSTERGENRE_DRIFT_WARN_JS", "0.00001")
    monkeypatch.setenv("POSTERGENRE_DRIFT_ALERT_JS", "0.00002")
    for t in monitor.tasks:  # a failure should fail the test now, not after minutes of retry backoff
        monkeypatch.setattr(t, "retries", 0)
    exports = [generate_snapshot(tmp_path / f"export{i}", movies=60, seed=i).out for i in (1, 2)]

    def run(day: int, source: Path, snapshot_id: str):
        dr = monitor.test(logical_date=datetime(2026, 1, day, 2, tzinfo=UTC),
                          run_conf={"source": str(source), "snapshot_id": snapshot_id})
        states = {ti.task_id: ti.state for ti in dr.get_task_instances()}
        assert dr.state == "success", states
        return dr, states

    # First night: default id (the logical date), nothing to compare with, no champion yet.
    first, states = run(1, exports[0], "")
    assert states["drift_vs_champion"] == "skipped"
    # A champion trained on the first snapshot appears before the second night.
    reg = open_store(settings.registry_url)
    version = registry.register_version(reg, "genre-cnn", files={"model.keras": b"weights"}, metrics={},
                                        lineage={"snapshot_id": "2026-01-01"})["version"]
    registry.promote(reg, "genre-cnn", version, actor="test", reason="first model")
    second, states = run(2, exports[1], "second-night")
    assert states["drift_vs_champion"] == "success"

    with db.session_scope(db.make_engine(settings.db_url)) as session:
        assert session.get(db.Snapshot, "2026-01-01") is not None
        assert session.get(db.Snapshot, "second-night") is not None
        reports = {(r.snapshot_id, r.baseline_id, r.kind): r.report_uri for r in db.drift_history(session)}
    assert set(reports) == {("second-night", "2026-01-01", "previous"), ("second-night", "2026-01-01", "champion")}
    store = open_store(settings.store_url)
    for uri in reports.values():
        assert store.exists(uri.removeprefix(store.url.rstrip("/") + "/"))

    events = _asset_events([first.run_id, second.run_id])
    assert [e.extra["snapshot_id"] for e in events] == ["2026-01-01", "second-night"]
    assert events[0].extra["severity"] == "ok"
    assert events[0].extra["report_uris"] == []
    assert sorted(events[1].extra["report_uris"]) == sorted(reports.values())
    assert events[1].extra["severity"] == "alert"
    assert events[1].extra["drift"]["champion"]["baseline_id"] == "2026-01-01"
    # Only the alerting night published on the drift-alert asset (what the retrain DAG schedules on).
    from postergenre.assets import DRIFT_ALERT_ASSET

    alert_events = _asset_events([first.run_id, second.run_id], DRIFT_ALERT_ASSET)
    assert [e.extra for e in alert_events] == [events[1].extra]
    # The notifier fired exactly for the alert.
    assert [a["details"]["snapshot_id"] for a in alerts] == ["second-night"]

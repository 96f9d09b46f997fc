"""The embedded Airflow run for real: its own api-server, scheduler and dag-processor on loopback, driven over
the public REST API (v2) only, for end-to-end tests and local runs.

``dag.test()`` runs every task in one process; this stack is what ``scripts/airflow-local.sh`` starts, with the
environment of :func:`support.airflow_env.airflow_env`: the scheduler queues task instances, the
LocalExecutor's workers run them in separate processes through the execution API, and the triggering user and
the trigger form's Params go through the real API. Components are started as separate processes (rather than
``airflow standalone``) so each has its own log and a dead one is noticed at once. Each runs in a new session
(setsid), hence its own process group, and on exit every group is stopped as a whole: executor workers and task
processes included.

Nothing here imports airflow: it is all subprocesses (psutil, an Airflow dependency, finds their children) and
HTTP (urllib).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil  # an Airflow dependency

from postergenre.airflow_pools import GPU_POOL, GPU_POOL_SLOTS
from postergenre.config import Settings

from .airflow_env import ADMIN_USER, airflow_env, airflow_home, install_local_settings, passwords_file
from .process import ManagedServer, free_ports

COMPONENTS = ("api-server", "scheduler", "dag-processor")
FINISHED_RUN_STATES = ("success", "failed")
_TI_PAGE = 100  # [api] maximum_page_limit


STACK_ENV = {
    # The DAG files do not change while a test or benchmark runs: re-parsing both every 30 s (the default; ``make
    # airflow`` keeps it, to pick up edits) cost the dag-processor 5.9 CPU-s in a 4-member benchmark run, 0.8-1.2
    # CPU-s with this (small, but it competes with the tasks on a 2-core box).
    "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "600",
}


class AirflowStackError(RuntimeError):
    pass


class AirflowStack(ManagedServer):
    """Context manager: migrate the metadata DB, start the components, wait until healthy, stop on exit.

    ``extra_env`` is added to every component's environment (e.g. the ``AWS_*`` variables of an S3 server): task
    processes inherit it. Component logs go to ``<home>/airflow/stack/<component>.log``.
    """

    def __init__(
        self,
        settings: Settings,
        repo_root: Path,
        *,
        port: int | None = None,
        extra_env: Mapping[str, str] | None = None,
        triggerer: bool = False,
        startup_timeout: float = 300.0,
        stop_timeout: float = 30.0,
    ) -> None:
        self.settings = settings
        self.repo_root = Path(repo_root).resolve()
        self.port = port or free_ports(1)[0]
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.components = (*COMPONENTS, "triggerer") if triggerer else COMPONENTS
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.home = airflow_home(settings)
        self.log_dir = self.home / "stack"
        self.env = self._environment(extra_env or {})
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._token: str | None = None
        self._parsed: set[str] = set()

    # ------------------------------------------------------------------------------------------ lifecycle

    def _environment(self, extra_env: Mapping[str, str]) -> dict[str, str]:
        """The caller's environment plus the embedded Airflow's; the venv's bin first on PATH (components and
        the executor find ``airflow`` there)."""
        bin_dir = str(Path(sys.executable).parent)
        env = {
            **os.environ,
            **airflow_env(self.settings, self.repo_root, port=self.port),
            **STACK_ENV,
            **extra_env,
        }
        env["PATH"] = os.pathsep.join([bin_dir, env.get("PATH", "")])
        return env

    @property
    def airflow_bin(self) -> str:
        return str(Path(sys.executable).parent / "airflow")

    def log_path(self, component: str) -> Path:
        return self.log_dir / f"{component}.log"

    def password(self) -> str:
        """The admin password, created (readable by the owner only) on first use, as airflow-local.sh does."""
        path = passwords_file(self.settings)
        if not path.exists() or not path.stat().st_size:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                json.dump({ADMIN_USER: secrets.token_urlsafe(12)}, fh)
        return json.loads(path.read_text())[ADMIN_USER]

    def start(self) -> AirflowStack:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.password()
        install_local_settings(self.settings)  # warm task starts: the scheduler preloads numpy, pandas, ...
        started = time.monotonic()
        try:
            self._migrate()
            for component in self.components:
                self._spawn(component)
            self._wait_healthy()
            self.ensure_pool(GPU_POOL, GPU_POOL_SLOTS, "accelerator-bound tasks (training, tuning)")
        except BaseException:
            self.stop()
            raise
        print(
            f"airflow stack up at {self.base_url} in {time.monotonic() - started:.0f} s (logs: {self.log_dir})"
        )
        return self

    def _migrate(self) -> None:
        with self.log_path("migrate").open("ab") as log:
            done = subprocess.run(
                [self.airflow_bin, "db", "migrate"],
                env=self.env,
                cwd=self.repo_root,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                timeout=self.startup_timeout,
            )
        if done.returncode:
            raise AirflowStackError(
                f"airflow db migrate failed ({done.returncode}):\n{self.log_tail('migrate')}"
            )

    def _spawn(self, component: str) -> None:
        """``airflow <component>`` in a new session: its pid is its process group id."""
        with self.log_path(component).open("ab") as log:
            proc = subprocess.Popen(
                [self.airflow_bin, component],
                env=self.env,
                cwd=self.repo_root,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self._procs[component] = proc

    def check_alive(self) -> None:
        """Raise with the log tail if a component has exited."""
        for component, proc in self._procs.items():
            if proc.poll() is not None:
                raise AirflowStackError(
                    f"airflow {component} exited ({proc.returncode}):\n{self.log_tail(component)}"
                )

    def health(self) -> dict:
        return self.request("GET", "/api/v2/monitor/health", auth=False)

    def _healthy(self, health: Mapping[str, Any]) -> bool:
        wanted = ["metadatabase", "scheduler", "dag_processor"]
        if "triggerer" in self.components:
            wanted.append("triggerer")
        return all((health.get(part) or {}).get("status") == "healthy" for part in wanted)

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        last: Any = None
        while True:
            self.check_alive()
            try:
                last = self.health()
                if self._healthy(last):
                    return
            except (OSError, AirflowStackError) as exc:  # not listening yet
                last = exc
            if time.monotonic() > deadline:
                tails = "\n".join(f"--- {c}\n{self.log_tail(c, 15)}" for c in self._procs)
                raise AirflowStackError(
                    f"airflow not healthy after {self.startup_timeout:.0f} s: {last}\n{tails}"
                )
            time.sleep(2)

    def stop(self) -> None:
        """SIGTERM every component's process group, wait, then SIGKILL what is left, task processes included:
        the task supervisor starts each task in a session of its own, outside the component's group, and a
        task killed in the middle of training ignores SIGTERM."""
        procs, self._procs = list(self._procs.values()), {}
        tree = _descendants(procs)
        for proc in procs:
            _signal_group(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        tree.update(_descendants(procs))
        for proc in procs:
            _signal_group(proc.pid, signal.SIGKILL)
        for child in tree.values():
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()  # psutil refuses if the pid was reused meanwhile
        for proc in procs:
            proc.wait()
        psutil.wait_procs(list(tree.values()), timeout=5)

    def cpu_seconds(self) -> dict[str, float]:
        """CPU time (user + system) used so far by each component with everything it started: the scheduler's
        figure includes its LocalExecutor workers and every task process they ran. Unlike wall time, it hardly
        depends on what else the machine runs, so two runs can be compared on a shared box."""
        return {component: _tree_cpu(proc.pid) for component, proc in self._procs.items()}

    def log_tail(self, component: str, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path(component).read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    # ------------------------------------------------------------------------------------------ REST

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        params: Mapping[str, Any] | None = None,
        auth: bool = True,
        timeout: float = 30.0,
    ) -> Any:
        """One JSON call to the API server (``path`` from the root, e.g. ``/api/v2/pools``); HTTPStatusError on
        an error status."""
        url = self.base_url + path + (f"?{urllib.parse.urlencode(params)}" if params else "")
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if auth:
            headers["Authorization"] = f"Bearer {self.token()}"
        request = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:2000]
            raise HTTPStatusError(exc.code, f"{method} {path}: HTTP {exc.code}: {detail}") from None
        return json.loads(raw) if raw else None

    def token(self) -> str:
        """A JWT from the simple auth manager (``POST /auth/token``), fetched once."""
        if self._token is None:
            body = {"username": ADMIN_USER, "password": self.password()}
            self._token = self.request("POST", "/auth/token", body, auth=False)["access_token"]
        return self._token

    def ensure_pool(self, name: str, slots: int, description: str = "") -> None:
        try:
            self.request("POST", "/api/v2/pools", {"name": name, "slots": slots, "description": description})
        except HTTPStatusError as exc:
            if exc.status != 409:
                raise
            self.request(
                "PATCH", f"/api/v2/pools/{_q(name)}", {"slots": slots}, params={"update_mask": "slots"}
            )

    def import_errors(self) -> list[dict]:
        return self.request("GET", "/api/v2/importErrors")["import_errors"]

    def wait_for_dag(self, dag_id: str, timeout: float = 240.0) -> dict:
        """Wait until the dag processor has serialised ``dag_id``; a DAG file that fails to import fails at once."""
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            try:
                dag = self.request("GET", f"/api/v2/dags/{_q(dag_id)}")
                self._parsed.add(dag_id)
                return dag
            except HTTPStatusError as exc:
                if exc.status != 404:
                    raise
            errors = self.import_errors()
            if errors:
                text = "\n".join(f"{e['filename']}:\n{e['stack_trace']}" for e in errors)
                raise AirflowStackError(f"DAG import errors while waiting for {dag_id}:\n{text}")
            if time.monotonic() > deadline:
                raise AirflowStackError(
                    f"DAG {dag_id} not parsed after {timeout:.0f} s:\n{self.log_tail('dag-processor', 20)}"
                )
            time.sleep(2)

    def set_paused(self, dag_id: str, paused: bool) -> None:
        self.request("PATCH", f"/api/v2/dags/{_q(dag_id)}", {"is_paused": paused})

    def trigger(self, dag_id: str, conf: Mapping[str, Any] | None = None, *, unpause: bool = True) -> str:
        """Start a manual run with ``conf`` (validated against the DAG's Params by the API); returns its run id.

        New DAGs start paused and the scheduler ignores runs of paused DAGs, so by default the DAG is unpaused.
        """
        if dag_id not in self._parsed:
            self.wait_for_dag(dag_id)
        if unpause:
            self.set_paused(dag_id, False)
        run = self.request(
            "POST", f"/api/v2/dags/{_q(dag_id)}/dagRuns", {"logical_date": None, "conf": dict(conf or {})}
        )
        return run["dag_run_id"]

    def dag_run(self, dag_id: str, run_id: str) -> dict:
        return self.request("GET", f"/api/v2/dags/{_q(dag_id)}/dagRuns/{_q(run_id)}")

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        """Every task instance of the run, mapped ones included (one per map index)."""
        path = f"/api/v2/dags/{_q(dag_id)}/dagRuns/{_q(run_id)}/taskInstances"
        tis: list[dict] = []
        while True:
            page = self.request("GET", path, params={"limit": _TI_PAGE, "offset": len(tis)})
            tis.extend(page["task_instances"])
            if not page["task_instances"] or len(tis) >= page["total_entries"]:
                return tis

    def task_log_entries(self, ti: Mapping[str, Any]) -> list[Any]:
        """The structured log events (each with its ``timestamp`` and ``event``) of a task instance's latest
        try."""
        path = (
            f"/api/v2/dags/{_q(ti['dag_id'])}/dagRuns/{_q(ti['dag_run_id'])}/taskInstances/"
            f"{_q(ti['task_id'])}/logs/{max(ti['try_number'], 1)}"
        )
        content = self.request("GET", path, params={"map_index": ti["map_index"], "full_content": "true"})
        return content.get("content", [])

    def task_log(self, ti: Mapping[str, Any], lines: int = 30) -> str:
        """The last ``lines`` lines of a task instance's latest try, rendered from the structured log."""
        rendered = [line for entry in self.task_log_entries(ti) for line in _render_log_entry(entry)]
        return "\n".join(rendered[-lines:])

    def wait(self, dag_id: str, run_id: str, timeout: float = 720.0, poll: float = 5.0) -> str:
        """Wait for the run to finish, printing task states as they change; returns its final state.

        On failure the failed task instances' log tails are printed; on timeout AirflowStackError is raised.
        """
        started = time.monotonic()
        shown = ""
        while True:
            self.check_alive()
            state = self.dag_run(dag_id, run_id)["state"]
            tis = self.task_instances(dag_id, run_id)
            line = f"{state}: {summarise_states(tis)}"
            if line != shown:
                print(f"[{time.monotonic() - started:5.0f} s] {dag_id} {line}", flush=True)
                shown = line
            if state in FINISHED_RUN_STATES:
                if state != "success":
                    self.print_failures(tis)
                return state
            if time.monotonic() - started > timeout:
                self.print_failures(tis)
                raise AirflowStackError(f"{dag_id} run {run_id} still {state} after {timeout:.0f} s: {line}")
            time.sleep(poll)

    def print_failures(self, tis: Sequence[Mapping[str, Any]]) -> None:
        for ti in tis:
            if ti["state"] in ("failed", "up_for_retry"):
                label = _ti_label(ti)
                try:
                    tail = self.task_log(ti)
                except (OSError, AirflowStackError) as exc:
                    tail = f"(log unavailable: {exc})"
                print(f"----- {label} {ti['state']} (try {ti['try_number']}):\n{tail}", flush=True)


class HTTPStatusError(AirflowStackError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _q(segment: str) -> str:
    return urllib.parse.quote(segment, safe="")


def _descendants(procs: Sequence[subprocess.Popen[bytes]]) -> dict[int, psutil.Process]:
    found: dict[int, psutil.Process] = {}
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            found.update((c.pid, c) for c in psutil.Process(proc.pid).children(recursive=True))
    return found


def _tree_cpu(pid: int) -> float:
    """CPU seconds of a process and its descendants, living and exited (exited children count once reaped,
    in their parent's ``children_*`` times)."""
    total = 0.0
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return total
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            t = process.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
    return round(total, 1)


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def _ti_label(ti: Mapping[str, Any]) -> str:
    if ti["map_index"] < 0:
        return ti["task_id"]
    return f"{ti['task_id']}[{ti.get('rendered_map_index') or ti['map_index']}]"


def _render_log_entry(entry: Any) -> list[str]:
    """A structured log event as text: ``LEVEL event`` plus any exception it carries."""
    if isinstance(entry, str):
        return [entry]
    lines = [f"{entry.get('level', '').upper():<7} {entry.get('event', '')}".rstrip()]
    for error in entry.get("error_detail") or []:
        for frame in (error.get("frames") or [])[-3:]:
            lines.append(f"    {frame.get('filename')}:{frame.get('lineno')} in {frame.get('name')}")
        lines.append(f"  {error.get('exc_type')}: {error.get('exc_value')}")
    return lines


def summarise_states(tis: Sequence[Mapping[str, Any]]) -> str:
    """One line: each task's state, mapped tasks as counts per state (``train x20 {running: 4, success: 6}``)."""
    by_task: dict[str, list[str | None]] = defaultdict(list)
    for ti in tis:
        by_task[ti["task_id"]].append(ti["state"])
    parts = []
    for task_id, states in by_task.items():
        if len(states) == 1:
            parts.append(f"{task_id}={states[0] or 'none'}")
        else:
            counted = Counter(s or "none" for s in states)
            counts = ", ".join(f"{s}: {n}" for s, n in sorted(counted.items()))
            parts.append(f"{task_id} x{len(states)} {{{counts}}}")
    return " ".join(parts)


# ---------------------------------------------------------------------------------------------- timings


def _when(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _busy_seconds(intervals: list[tuple[datetime, datetime]]) -> float:
    """Length of the union of the intervals: wall time during which at least one task was running."""
    total, current_start, current_end = 0.0, None, None
    for start, end in sorted(intervals):
        if current_end is None or start > current_end:
            if current_end is not None:
                total += (current_end - current_start).total_seconds()
            current_start, current_end = start, end
        else:
            current_end = max(current_end, end)
    if current_end is not None:
        total += (current_end - current_start).total_seconds()
    return total


def run_timings(dag_run: Mapping[str, Any], tis: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Where a finished run's wall time went, from the REST API's dates.

    ``wall_s``: the run's start to end; ``queued_s``: from being triggered to starting. ``stages``: per task id (in start order) how many instances ran, their summed run time, the stage's wall
    span (first start to last end), the mean wait from queued to running, and the gap since the previous stage
    ended (the scheduler noticing, queueing and starting the next task). ``idle_s``: wall time with no task
    running at all, i.e. pure orchestration overhead; ``task_s``: summed task run time (process start and DAG
    parse included, as Airflow counts it).
    """
    run_start, run_end = _when(dag_run["start_date"]), _when(dag_run["end_date"])
    ran = [ti for ti in tis if ti.get("start_date") and ti.get("end_date")]
    grouped: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for ti in ran:
        grouped[ti["task_id"]].append(ti)
    stages = []
    previous_end = run_start
    for task_id, group in sorted(grouped.items(), key=lambda kv: min(_when(t["start_date"]) for t in kv[1])):
        first = min(_when(t["start_date"]) for t in group)
        last = max(_when(t["end_date"]) for t in group)
        waits = [
            (_when(t["start_date"]) - _when(t["queued_when"])).total_seconds()
            for t in group
            if t.get("queued_when")
        ]
        stages.append(
            {
                "task_id": task_id,
                "n": len(group),
                "task_s": round(sum(t["duration"] or 0.0 for t in group), 2),
                "span_s": round((last - first).total_seconds(), 2),
                "queued_wait_s": round(sum(waits) / len(waits), 2) if waits else None,
                "gap_before_s": round((first - previous_end).total_seconds(), 2) if previous_end else None,
            }
        )
        previous_end = last if previous_end is None else max(previous_end, last)
    wall = (run_end - run_start).total_seconds() if run_start and run_end else None
    queued_at = _when(dag_run.get("queued_at"))
    busy = _busy_seconds([(_when(t["start_date"]), _when(t["end_date"])) for t in ran])
    return {
        "wall_s": round(wall, 2) if wall is not None else None,
        "queued_s": round((run_start - queued_at).total_seconds(), 2) if queued_at and run_start else None,
        "busy_s": round(busy, 2),
        "idle_s": round(wall - busy, 2) if wall is not None else None,
        "task_s": round(sum(t["duration"] or 0.0 for t in ran), 2),
        "tasks": len(ran),
        "stages": stages,
    }


def format_timings(timings: Mapping[str, Any]) -> str:
    lines = [
        f"run queued {timings['queued_s']} s, then wall {timings['wall_s']} s: tasks running {timings['busy_s']} s, nothing running (orchestration) "
        f"{timings['idle_s']} s; {timings['tasks']} task instances, {timings['task_s']} s of task time",
        f"  {'task':<20}{'n':>4}{'task s':>10}{'span s':>10}{'queued->run s':>15}{'gap before s':>14}",
    ]
    for s in timings["stages"]:
        lines.append(
            f"  {s['task_id']:<20}{s['n']:>4}{s['task_s']:>10}{s['span_s']:>10}"
            f"{s['queued_wait_s'] if s['queued_wait_s'] is not None else '-':>15}"
            f"{s['gap_before_s'] if s['gap_before_s'] is not None else '-':>14}"
        )
    return "\n".join(lines)

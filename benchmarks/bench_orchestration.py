"""What orchestration costs: one small retrain in-process and as a real Airflow run, side by side in one run.

One synthetic export, one SeaweedFS S3 server, the same run settings twice, each into its own buckets and home:

1. **in-process**: what ``postergenre run --source EXPORT`` does (ingest, prepare, ``run_retrain``) in one fresh
   process, its interpreter start and imports included once; every head step call is timed.
2. **Airflow**: the project's own local stack (``tests/support/airflow_stack.py``: api-server, scheduler with
   the LocalExecutor, dag-processor on loopback, SQLite, a fresh ``AIRFLOW_HOME``), ``postergenre_retrain``
   triggered over REST with the same settings as ``conf``, polled until done. Stack start-up is not counted.

Both use the stack's bytecode settings, with the cache filled first, so neither pays for compiling sources. The
stack's JAX compilation cache is filled first too (``--cold-jax`` skips it), by the same retrain in-process on
the JAX backend: a stack that has run before (every nightly run after the first) holds the XLA programs of its
heads, and a fresh Airflow home compiles each one once. That run's wall is printed too: the ratio against it is
the orchestration's share without the JAX-vs-TensorFlow difference of the head steps.
Printed: both walls and their ratio; for the Airflow run the number of task instances, their summed duration,
the wall time with no task running (scheduling gaps), per stage counts/spans/gaps, and per head task instance
(tuning trials, training on cached features, evaluation, promotion) its duration split into start-up (fork,
DAG parse), the callable and wind-down (XCom, state), its overhead (duration - the step's own work: a logged
``step_seconds`` or the ``seconds`` a step returns, i.e. trials' and training's fit time), the start latency
(queued -> running), and the duration minus the same step's call in the in-process run.

Run: ``POSTERGENRE_TEST_BACKBONES=1 python -m benchmarks.bench_orchestration [--movies 600 --image-size 64
--trials 2 --epochs 2 --ova-genres Comedy Drama --parallelism 2]``. ``--stack-env NAME=VALUE`` changes one
setting of the stack (an A/B), ``--work DIR`` keeps homes and task logs, ``--raw FILE`` keeps every task
instance, return value and log (``--analyse FILE`` prints the report again from it).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from statistics import mean, median
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
DAG_ID = "postergenre_retrain"
BACKBONE, WEIGHTS = "tiny", "none"
# The synth default export: at 600 movies every genre keeps enough movies for 70/15/15 splits after collapsing.
EXPORT_SEED, RUN_SEED = 0, 42
# Head tasks train or score on cached features (JAX-able); embed and fine-tune read pixels (queue "gpu").
HEAD_TASK = re.compile(r"(^|\.)(trial|trial_round_\d+|train|evaluate|promote)$")
PIXEL_QUEUE = "gpu"
# The task runner's line right after the callable returned (PythonOperator), or its next group.
_EXECUTE_END = ("Done. Returned value", "::group::Post Execute")
STEP_SECONDS = "step_seconds"
"""Log key of a step's own time, if the DAG's step wrapper logs one (``run_step``: proposed to the lead)."""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_orchestration",
        description="One small retrain in-process and as a real Airflow run of postergenre_retrain: walls, "
        "task instances, scheduling gaps and per-task overhead.",
    )
    parser.add_argument("--movies", type=int, default=600, help="movies in the synthetic export (600)")
    parser.add_argument("--image-size", type=int, default=64, help="poster side in pixels (64)")
    parser.add_argument("--trials", type=int, default=2, help="tuning trials (2)")
    parser.add_argument("--epochs", type=int, default=2, help="epoch budget per model (2)")
    parser.add_argument(
        "--ova-genres",
        nargs="*",
        default=[],
        metavar="GENRE",
        help="one-vs-all members to train besides genre-cnn (default: every genre of the dataset)",
    )
    parser.add_argument(
        "--parallelism",
        type=int,
        default=None,
        help="LocalExecutor parallelism and max active tasks of the DAG (default: the local stack's)",
    )
    parser.add_argument("--only", choices=("in-process", "airflow"), help="run one contender only")
    parser.add_argument(
        "--cold-jax",
        action="store_true",
        help="start the stack with an empty JAX compilation cache (a fresh Airflow home's first run)",
    )
    parser.add_argument(
        "--stack-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment of the Airflow stack, e.g. POSTERGENRE_AIRFLOW_PRELOAD=0 (an A/B of one setting)",
    )
    parser.add_argument("--work", type=Path, help="keep the export, homes and Airflow logs in this folder")
    parser.add_argument(
        "--raw", type=Path, help="write the Airflow run's task instances and logs here (JSON)"
    )
    parser.add_argument("--analyse", type=Path, metavar="RAW", help="print the report of a --raw file again")
    args = parser.parse_args(argv)
    for name in ("movies", "image_size", "trials", "epochs"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.parallelism is not None and args.parallelism < 1:
        parser.error("--parallelism must be >= 1")
    if any("=" not in pair for pair in args.stack_env):
        parser.error("--stack-env takes NAME=VALUE")
    return args


def run_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The run's knobs, as the DAG's Params spell them (the CLI flags are derived from the same fields)."""
    return {
        "n_trials": args.trials,
        "max_epochs": args.epochs,
        "backbone": BACKBONE,
        "weights": WEIGHTS,
        "image_size": args.image_size,
        "seed": RUN_SEED,
    }


def targets_of(ova_genres: Sequence[str]) -> list[str] | None:
    """What the run trains: genre-cnn and the chosen members, or None for every genre (as the DAG's Param)."""
    from postergenre.genres import CNN_MODEL

    return [CNN_MODEL, *ova_genres] if ova_genres else None


def _load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


# ---------------------------------------------------------------------------------------------- contenders


def _test_support() -> None:
    """The launchers are test support, kept out of the shipped package: import them as the tests do."""
    tests = str(REPO_ROOT / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)


def _postergenre_env(server, home: Path, bucket: str) -> dict[str, str]:
    """Store, registry and DB of one contender; S3 through the standard AWS variables only."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "POSTERGENRE_"))}
    env.update(server.env())
    env.update(
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        POSTERGENRE_TEST_BACKBONES="1",
        POSTERGENRE_HOME=str(home),
        POSTERGENRE_STORE_URL=f"s3://{bucket}-data/store",
        POSTERGENRE_REGISTRY_URL=f"s3://{bucket}-registry/models",
        POSTERGENRE_DB_URL=f"sqlite:///{home / 'postergenre.db'}",
    )
    for suffix in ("data", "registry"):
        server.create_bucket(f"{bucket}-{suffix}")
    return env


def run_in_process(
    args, server, export: Path, work: Path, extra_env: Mapping[str, str], name: str = "in-process"
) -> dict[str, Any]:
    """What ``postergenre run --source EXPORT`` does (ingest, prepare, ``run_retrain``) in one fresh process,
    each step call timed: the wall includes the interpreter's start and imports, once."""
    home = work / name
    env = {**_postergenre_env(server, home, name.replace("-", "")), **extra_env}
    spec = {"export": str(export), "settings": run_settings(args), "targets": targets_of(args.ova_genres)}
    code = (
        f"from benchmarks.bench_orchestration import in_process_main; in_process_main({json.dumps(spec)!r})"
    )
    load_before, started, cpu_before = _load(), time.perf_counter(), _children_cpu()
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=REPO_ROOT, capture_output=True, text=True
    )
    wall, cpu = time.perf_counter() - started, _children_cpu() - cpu_before
    if done.returncode:
        raise RuntimeError(f"in-process retrain failed ({done.returncode}):\n{done.stderr[-4000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {**result, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "load": f"{load_before} -> {_load()}"}


def _children_cpu() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


_TIMED_STEPS = {  # module, function, step kind, how to name its target from the call's arguments
    ("postergenre.steps.tune", "trial_step"): ("trial", lambda a: a[1]["trial_id"]),
    ("postergenre.steps.run", "train_step"): ("train", lambda a: a[1]),
    ("postergenre.steps.run", "evaluate_step"): ("evaluate", lambda a: a[1]),
    ("postergenre.steps.run", "promote_step"): ("promote", lambda a: a[1]),
}


def _time_steps(timings: list[dict[str, Any]]) -> None:
    """Wrap the head steps where ``run_retrain`` and ``run_tuning`` look them up, recording each call."""
    import importlib

    for (module_name, function), (kind, target_of) in _TIMED_STEPS.items():
        module = importlib.import_module(module_name)
        step = getattr(module, function)

        def timed(*a, _step=step, _kind=kind, _target_of=target_of, **kw):
            started = time.perf_counter()
            result = _step(*a, **kw)
            timings.append(
                {"kind": _kind, "target": _target_of(a), "s": round(time.perf_counter() - started, 3)}
            )
            return result

        setattr(module, function, timed)


def in_process_main(spec_json: str) -> None:
    """The in-process contender's body (its own process): prints one JSON line."""
    from postergenre.run_settings import RunSettings
    from postergenre.steps.ingest import ingest_snapshot
    from postergenre.steps.prepare import prepare_dataset
    from postergenre.steps.run import run_retrain

    spec = json.loads(spec_json)
    timings: list[dict[str, Any]] = []
    _time_steps(timings)
    snapshot_id = ingest_snapshot(spec["export"], snapshot_id="bench")["snapshot_id"]
    config = RunSettings(snapshot_id=snapshot_id, **spec["settings"])
    prepare_dataset(snapshot_id, seed=config.seed)
    result = run_retrain("bench-in-process", config, targets=spec["targets"])
    print(json.dumps({"retrain_s": result["seconds"], "trained": result["trained"], "steps": timings}))


def run_on_airflow(args, server, export: Path, work: Path, extra_env: Mapping[str, str]) -> dict[str, Any]:
    """``postergenre_retrain`` on the local stack, triggered over REST with the same settings as ``conf``."""
    _test_support()
    from support.airflow_stack import AirflowStack

    from postergenre.config import Settings

    home = work / "airflow"
    env = _postergenre_env(server, home, "airflow")
    settings = Settings(
        home=home,
        store_url=env["POSTERGENRE_STORE_URL"],
        registry_url=env["POSTERGENRE_REGISTRY_URL"],
        db_url=env["POSTERGENRE_DB_URL"],
    )
    stack_env = {k: env[k] for k in env if k.startswith("AWS_")} | {"POSTERGENRE_TEST_BACKBONES": "1"}
    # Manual runs only: unpausing would otherwise also start the latest cron tick's run.
    stack_env["AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE"] = "False"
    if args.parallelism:
        stack_env["AIRFLOW__CORE__PARALLELISM"] = str(args.parallelism)
        stack_env["AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG"] = str(args.parallelism)
    stack_env.update(extra_env)
    conf = {
        "source": str(export),
        "snapshot_id": "bench",
        **run_settings(args),
        "ova_genres": args.ova_genres,
    }
    with AirflowStack(settings, REPO_ROOT, extra_env=stack_env) as stack:
        stack.wait_for_dag(DAG_ID)
        parallelism = stack.env["AIRFLOW__CORE__PARALLELISM"]
        load_before, started, cpu_before = _load(), time.perf_counter(), stack.cpu_seconds()
        run_id = stack.trigger(DAG_ID, conf)
        state = stack.wait(DAG_ID, run_id, timeout=3600, poll=5.0)  # polling costs api-server CPU
        client_wall = time.perf_counter() - started
        load_after, cpu_after = _load(), stack.cpu_seconds()
        raw = collect_raw(stack, run_id)
    if state != "success":
        raise RuntimeError(f"{DAG_ID} run {run_id} ended {state}")
    raw.update(
        client_wall_s=round(client_wall, 1), load=f"{load_before} -> {load_after}", parallelism=parallelism
    )
    raw["cpu_s"] = {c: round(cpu_after[c] - cpu_before.get(c, 0.0), 1) for c in cpu_after}
    return raw


def collect_raw(stack, run_id: str) -> dict[str, Any]:
    """The run, every task instance, and for each head task instance its return value and log events."""
    dag_run = stack.dag_run(DAG_ID, run_id)
    tis = stack.task_instances(DAG_ID, run_id)
    for ti in tis:
        if is_head(ti) and ti["state"] == "success":
            ti["_return"] = _return_value(stack, ti)
            ti["_log"] = stack.task_log_entries(ti)
    return {"dag_run": dag_run, "tis": tis}


def _return_value(stack, ti: Mapping[str, Any]) -> Any:
    from support.airflow_stack import HTTPStatusError, _q

    path = (
        f"/api/v2/dags/{_q(ti['dag_id'])}/dagRuns/{_q(ti['dag_run_id'])}/taskInstances/"
        f"{_q(ti['task_id'])}/xcomEntries/return_value"
    )
    try:
        value = stack.request("GET", path, params={"map_index": ti["map_index"]})["value"]
    except HTTPStatusError:
        return None
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


# ---------------------------------------------------------------------------------------------- analysis


def is_head(ti: Mapping[str, Any]) -> bool:
    return bool(HEAD_TASK.search(ti["task_id"])) and ti.get("queue") != PIXEL_QUEUE


def _when(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _log_marks(entries: Sequence[Any]) -> dict[str, Any]:
    """When the task's code started and returned, from the task runner's own log lines, plus the DAG file's
    parse time and a step time logged by the DAG's step wrapper, if any (``step_seconds``)."""
    marks: dict[str, Any] = {}
    for entry in entries:
        if not isinstance(entry, Mapping) or not entry.get("timestamp"):
            continue  # the "log message source" preamble has no timestamp
        event, when = str(entry.get("event", "")), _when(entry["timestamp"])
        if event == "Worker startup parse complete":
            marks["parse_s"] = entry.get("dag_file_parse_ms", 0) / 1000
        elif event == "::endgroup::" and "execute_from" not in marks and "parse_s" in marks:
            marks["execute_from"] = when  # "Pre Execute" closes right before the callable runs
        elif event.startswith(_EXECUTE_END) and "execute_to" not in marks and "execute_from" in marks:
            marks["execute_to"] = when
        if isinstance(entry.get(STEP_SECONDS), int | float):
            marks["step_s"] = marks.get("step_s", 0.0) + float(entry[STEP_SECONDS])
    return marks


def step_work(ti: Mapping[str, Any], marks: Mapping[str, Any]) -> tuple[float | None, str]:
    """The step's own work: its logged step time, else the ``seconds`` it returned (fit time), else none."""
    if "step_s" in marks:
        return marks["step_s"], "step log"
    returned = ti.get("_return")
    if isinstance(returned, Mapping) and isinstance(returned.get("seconds"), int | float):
        return float(returned["seconds"]), "returned"
    return None, "-"


def step_key(ti: Mapping[str, Any]) -> tuple[str, str]:
    """(step kind, target) of a head task instance, as the in-process contender records its step calls."""
    from postergenre.genres import CNN_MODEL

    kind = ti["task_id"].rsplit(".", 1)[-1]
    kind = "trial" if kind.startswith("trial") else kind
    label = str(ti.get("rendered_map_index") or "")
    if kind == "trial":
        return kind, label.split(" ", 1)[0]  # trial_label starts with the trial id
    return kind, CNN_MODEL if ti["map_index"] < 0 else label


def in_process_times(in_process: Mapping[str, Any] | None) -> dict[tuple[str, str], float]:
    return {(s["kind"], s["target"]): s["s"] for s in (in_process or {}).get("steps", [])}


def head_overhead(
    ti: Mapping[str, Any], reference: Mapping[tuple[str, str], float] | None = None
) -> dict[str, Any]:
    """Duration as Airflow records it, split into runner start-up (fork, DAG parse), the callable (imports,
    data loading and the step's work) and wind-down (XCom, state); overhead = duration - work; and against
    the same step's call in the in-process run (``reference``), where imports and compilation happen once."""
    marks = _log_marks(ti.get("_log") or [])
    start, end, queued = (_when(ti.get(k)) for k in ("start_date", "end_date", "queued_when"))
    frm, to = marks.get("execute_from"), marks.get("execute_to")
    work, source = step_work(ti, marks)
    duration = ti.get("duration")
    in_process = (reference or {}).get(step_key(ti))

    def span(a: datetime | None, b: datetime | None) -> float | None:
        return round((b - a).total_seconds(), 2) if a and b else None

    return {
        "task": ti["task_id"] if ti["map_index"] < 0 else f"{ti['task_id']}[{ti.get('rendered_map_index')}]",
        "task_id": ti["task_id"],
        "duration_s": duration,
        "startup_s": span(start, frm),
        "parse_s": marks.get("parse_s"),
        "execute_s": span(frm, to),
        "wind_down_s": span(to, end),
        "work_s": work,
        "work_from": source,
        "overhead_s": round(duration - work, 2) if duration is not None and work is not None else None,
        "start_latency_s": span(queued, start),
        "in_process_s": in_process,
        "vs_in_process_s": round(duration - in_process, 2) if duration is not None and in_process else None,
    }


_COLUMNS = (
    ("task id", "task_id", 22),
    ("n", "n", 4),
    ("duration", "duration_s", 10),
    ("start-up", "startup_s", 10),
    ("parse", "parse_s", 7),
    ("callable", "execute_s", 10),
    ("wind-down", "wind_down_s", 11),
    ("work", "work_s", 8),
    ("overhead", "overhead_s", 10),
    ("queued->run", "start_latency_s", 13),
    ("in-proc", "in_process_s", 9),
    ("-in-proc", "vs_in_process_s", 10),
)


def _mean(group: Sequence[Mapping[str, Any]], key: str) -> str:
    values = [g[key] for g in group if g.get(key) is not None]
    return f"{mean(values):.1f}" if values else "-"


def _summary(values: Sequence[float]) -> str:
    if not values:
        return "-"
    return f"mean {mean(values):.1f}  median {median(values):.1f}  max {max(values):.1f}"


def format_airflow(raw: Mapping[str, Any], in_process: Mapping[str, Any] | None = None) -> str:
    _test_support()
    from support.airflow_stack import format_timings, run_timings

    timings = run_timings(raw["dag_run"], raw["tis"])
    reference = in_process_times(in_process)
    heads = [
        head_overhead(ti, reference) for ti in raw["tis"] if is_head(ti) and ti.get("duration") is not None
    ]
    mapped = sum(1 for ti in raw["tis"] if ti["map_index"] >= 0 and ti.get("start_date"))
    lines = [
        f"Airflow: parallelism {raw.get('parallelism')}, load {raw.get('load')}; trigger -> seen finished "
        f"{raw.get('client_wall_s')} s",
        f"  {timings['tasks']} task instances ran ({mapped} mapped), {timings['task_s']} s summed task time, "
        f"{timings['idle_s']} s of wall with nothing running",
        format_timings(timings),
        "",
        f"  head task instances: {len(heads)} (means per task id, seconds; callable: imports, data and work; "
        "in-proc: the same steps in-process)",
        "  "
        + "".join(f"{t:<{w}}" if i == 0 else f"{t:>{w}}" for i, (t, _, w) in enumerate(_COLUMNS))
        + "  work from",
    ]
    by_task: dict[str, list[dict]] = {}
    for head in heads:
        by_task.setdefault(head["task_id"], []).append(head)
    for task_id, group in by_task.items():
        cells = [f"{task_id:<{_COLUMNS[0][2]}}", f"{len(group):>{_COLUMNS[1][2]}}"]
        cells += [f"{_mean(group, key):>{w}}" for _, key, w in _COLUMNS[2:]]
        lines.append("  " + "".join(cells) + "  " + ",".join(sorted({g["work_from"] for g in group})))
    overheads = [h["overhead_s"] for h in heads if h["overhead_s"] is not None]
    latencies = [h["start_latency_s"] for h in heads if h["start_latency_s"] is not None]
    beyond = [h["vs_in_process_s"] for h in heads if h["vs_in_process_s"] is not None]
    lines.append(f"  per head task: overhead {_summary(overheads)}; start latency {_summary(latencies)}")
    lines.append(f"  per head task, duration - the same step in-process: {_summary(beyond)}")
    return "\n".join(lines)


def format_report(in_process: Mapping[str, Any] | None, airflow: Mapping[str, Any] | None) -> str:
    lines = []
    if in_process:
        heads = sum(step["s"] for step in in_process.get("steps", []))
        lines.append(
            f"in-process: wall {in_process['wall_s']} s, CPU {in_process.get('cpu_s')} s (run_retrain {in_process['retrain_s']} s, of which head "
            f"steps {heads:.1f} s; {in_process['trained']} models), load {in_process['load']}"
        )
    if airflow:
        wall = airflow["dag_run_wall_s"] = _run_wall(airflow["dag_run"])
        lines.append(f"Airflow run: wall {wall} s (dag run start -> end)")
        if in_process:
            lines.append(f"ratio Airflow / in-process: {wall / in_process['wall_s']:.2f}x")
        on_jax = airflow.get("in_process_jax_wall_s")
        if on_jax:  # the same backend as the head tasks: the orchestration's own share, apart from JAX vs TF
            lines.append(f"ratio Airflow / in-process on JAX (filling the cache): {wall / on_jax:.2f}x")
        lines.extend(_cpu_lines(airflow, in_process))
        lines.append(format_airflow(airflow, in_process))
    return "\n".join(lines)


def _cpu_lines(airflow: Mapping[str, Any], in_process: Mapping[str, Any] | None) -> list[str]:
    """CPU seconds: unlike walls, comparable between runs on a box others share."""
    cpu = airflow.get("cpu_s")
    if not cpu:
        return []
    parts = ", ".join(f"{component} {seconds}" for component, seconds in cpu.items())
    lines = [
        f"Airflow CPU: {sum(cpu.values()):.1f} s ({parts}; the scheduler's includes its workers and tasks)"
    ]
    if in_process and in_process.get("cpu_s"):
        lines.append(f"CPU ratio Airflow / in-process: {sum(cpu.values()) / in_process['cpu_s']:.2f}x")
    return lines


def _run_wall(dag_run: Mapping[str, Any]) -> float:
    return round((_when(dag_run["end_date"]) - _when(dag_run["start_date"])).total_seconds(), 1)


def _work_dir(keep: Path | None):
    if keep is None:
        return tempfile.TemporaryDirectory(prefix="pg-bench-orch-")
    keep.mkdir(parents=True, exist_ok=True)
    return contextlib.nullcontext(str(keep))


WARM_IMPORTS = (
    "import keras, tensorflow, jax, sklearn.metrics, pandas, pyarrow.parquet, boto3, postergenre.cli, "
    "postergenre.steps.run, postergenre.training, postergenre.models, postergenre.features, "
    "airflow.sdk.execution_time.task_runner"
)


def stack_jax_cache(work: Path) -> dict[str, str]:
    """The environment that points a process at the Airflow stack's JAX compilation cache, on JAX."""
    _test_support()
    from support.airflow_env import task_start_env

    from postergenre.config import Settings

    env = {k: v for k, v in task_start_env(Settings(home=work / "airflow")).items() if k.startswith("JAX_")}
    return {**env, "KERAS_BACKEND": "jax"}


def warm_bytecode() -> dict[str, str]:
    """The stack's bytecode settings, with the cache filled before either contender runs: neither pays for
    compiling the sources (the local stack keeps compiled bytecode across runs; an installed image has it)."""
    _test_support()
    from support.airflow_env import task_start_env

    from postergenre.config import Settings

    env = {k: v for k, v in task_start_env(Settings()).items() if k.startswith("PYTHON")}
    for backend in ("tensorflow", "jax"):
        subprocess.run(
            [sys.executable, "-c", WARM_IMPORTS],
            env={**os.environ, **env, "KERAS_BACKEND": backend},
            check=True,
            capture_output=True,
        )
    return env


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.analyse:
        raw = json.loads(args.analyse.read_text())
        print(format_report(raw.get("in_process"), raw))
        return raw
    os.environ.setdefault("POSTERGENRE_TEST_BACKBONES", "1")
    _test_support()
    from support.seaweed import SeaweedServer

    from postergenre.synth import generate_snapshot

    results: dict[str, Any] = {}
    with _work_dir(args.work) as tmp, SeaweedServer() as server:
        work = Path(tmp)
        export = generate_snapshot(work / "export", movies=args.movies, seed=EXPORT_SEED).out
        bytecode = warm_bytecode()
        stack_env = dict(pair.split("=", 1) for pair in args.stack_env)
        if args.only != "airflow":
            results["in_process"] = run_in_process(args, server, export, work, bytecode)
            print(format_report(results["in_process"], None), flush=True)
        if args.only != "in-process" and not args.cold_jax:
            warm = run_in_process(args, server, export, work, {**bytecode, **stack_jax_cache(work)}, "jax-warm-up")
            print(f"JAX compilation cache of the stack filled by the same retrain in-process on JAX: {warm['wall_s']} s")
        if args.only != "in-process":
            results["airflow"] = run_on_airflow(args, server, export, work, stack_env)
            if not args.cold_jax:
                results["airflow"]["in_process_jax_wall_s"] = warm["wall_s"]
    print(format_report(results.get("in_process"), results.get("airflow")))
    if args.raw and "airflow" in results:
        args.raw.write_text(json.dumps({**results["airflow"], "in_process": results.get("in_process")}))
    return results


if __name__ == "__main__":
    main()

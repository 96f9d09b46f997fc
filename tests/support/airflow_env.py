"""The local-dev Airflow's environment: everything under ``<POSTERGENRE_HOME>/airflow``, DAGs from the repo.

Airflow reads its configuration when ``airflow`` is first imported, so these variables must be in the
environment before that: ``scripts/airflow-local.sh`` (``make airflow``) evals
``PYTHONPATH=tests python -m support.airflow_env`` and the test plugin sets them at start-up. This module must
therefore never import airflow itself. It lives with the test support code, outside the shipped package: its
secrets and single-user login have no place in a production image (docker/ configures that stack).

Choices, for a laptop or a 2-core CI box: SQLite metadata DB; LocalExecutor with one worker per core (Airflow 3
runs it on SQLite; the default of 32 forks 32 workers; the tasks are CPU-bound: on 2 cores parallelism 2 ran
benchmarks/bench_orchestration.py's 4-member retrain in 98/87 s and 132/115 CPU-s, parallelism 4 in 114/89 s
and 177/133 CPU-s, with 3x the per-task overhead); one API worker and one parsing process; the simple auth
manager with one ``admin`` user whose password sits in a known file; fixed JWT and API secrets so that every
component (and a restarted one) agrees without shared state. The secrets are for local runs only. Task
processes start warm: :func:`task_start_env` and :func:`install_local_settings`.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Mapping
from pathlib import Path

from postergenre.airflow_pools import GPU_POOL
from postergenre.config import Settings

ADMIN_USER = "admin"
LOCAL_JWT_SECRET = "postergenre-local-jwt-secret-not-for-production-only-for-the-embedded-default"
LOCAL_API_SECRET = "postergenre-local-api-secret-not-for-production"
LOCAL_PARALLELISM = max(2, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 2))
"""LocalExecutor workers: one per usable core, at least 2 (a long task never holds up everything else), at most 4
(the SQLite metadata DB and one API worker serve them all)."""
SIMPLE_AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"


def airflow_home(settings: Settings) -> Path:
    return settings.home / "airflow"


def local_settings_file(settings: Settings) -> Path:
    """Airflow imports ``airflow_local_settings`` from ``$AIRFLOW_HOME/config`` (on its ``sys.path``)."""
    return airflow_home(settings) / "config" / "airflow_local_settings.py"


def install_local_settings(settings: Settings) -> Path:
    """Write the local settings that preload fork-safe libraries in the scheduler (postergenre.airflow_preload)."""
    from postergenre.airflow_preload import write_local_settings

    return write_local_settings(local_settings_file(settings).parent)


def bytecode_cache_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """Compiled bytecode of every module the stack imports, kept across homes (it depends on the sources only)."""
    base = environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "postergenre" / "pycache"


def task_start_env(settings: Settings, environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """What makes a task process start warm, measured with ``benchmarks.bench_orchestration``.

    * Bytecode: a venv installed by uv has no ``.pyc`` files, and with ``PYTHONDONTWRITEBYTECODE`` set (as on
      CI boxes) every task process compiled Airflow, Keras and TensorFlow from source again: ``import keras``
      took 31-35 s instead of 10-13 s on a loaded 2-core box; a 30-task run used 210 CPU-s without, ~106
      with it. The cache goes to a prefix outside the source tree, so the tree stays free of ``__pycache__``
      as the variable intends; an empty value means unset.
    * JAX's persistent compilation cache: each head task is a new process that would compile XLA programs an
      earlier task already compiled (same head, same shapes); a hit turns a 20-35 s first ``fit`` into 2-3 s,
      and a 30-task run used 236 CPU-s without it, ~106 with it.
      Kept under the Airflow home, so a fresh home starts cold; entries are small (a few MB per run).
    """
    env = {
        "JAX_COMPILATION_CACHE_DIR": str((airflow_home(settings) / "cache" / "jax").resolve()),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",  # default 1 s: the heads' programs compile faster
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
    }
    if environ.get("PYTHONDONTWRITEBYTECODE"):
        env["PYTHONPYCACHEPREFIX"] = environ.get("PYTHONPYCACHEPREFIX") or str(bytecode_cache_dir(environ))
        env["PYTHONDONTWRITEBYTECODE"] = ""
    return env


def passwords_file(settings: Settings) -> Path:
    """Where the simple auth manager keeps ``{"admin": "<password>"}``."""
    return airflow_home(settings) / "passwords.json"


def airflow_env(settings: Settings, repo_root: Path, *, port: int = 8080) -> dict[str, str]:
    """Environment variables for every Airflow process of the embedded default (and for tests).

    The resolved ``POSTERGENRE_*`` locations are included so that task processes, whatever their working
    directory, use the same store, registry and DB as the CLI that started them.
    """
    home = airflow_home(settings)
    repo_root = Path(repo_root).resolve()
    base_url = f"http://localhost:{port}"
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(repo_root / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(repo_root / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": str(LOCAL_PARALLELISM),
        "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": str(LOCAL_PARALLELISM),
        # Parsing imports airflow (seconds on a busy 2-core box): give it room, and look for new files often.
        "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "120",
        "AIRFLOW__DAG_PROCESSOR__DAG_FILE_PROCESSOR_TIMEOUT": "180",
        "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
        # The task supervisor notices its task's exit only at its next heartbeat wake-up (default 5 s) in about
        # one task in five, and holds the executor slot till then: queued -> running up to 4.5 s -> 1.0 s.
        "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "1",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": base_url,
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API__SECRET_KEY": LOCAL_API_SECRET,
        "AIRFLOW__API_AUTH__JWT_SECRET": LOCAL_JWT_SECRET,
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{base_url}/execution/",
        "AIRFLOW__CORE__AUTH_MANAGER": SIMPLE_AUTH_MANAGER,
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords_file(settings)),
        "POSTERGENRE_HOME": str(settings.home),
        "POSTERGENRE_STORE_URL": settings.store_url,
        "POSTERGENRE_REGISTRY_URL": settings.registry_url,
        "POSTERGENRE_DB_URL": settings.db_url,
        "POSTERGENRE_GPU_POOL": GPU_POOL,  # created by the launcher / the test stack, as airflow-init does
        **task_start_env(settings),
    }


def shell_exports(env: dict[str, str]) -> str:
    return "".join(f"export {name}={shlex.quote(value)}\n" for name, value in env.items())


def main(argv: list[str] | None = None) -> None:
    """``PYTHONPATH=tests python -m support.airflow_env [REPO_ROOT [PORT]]`` prints ``export`` lines for
    ``eval``."""
    args = sys.argv[1:] if argv is None else argv
    repo_root = Path(args[0]) if args else Path(__file__).resolve().parents[2]
    port = int(args[1]) if len(args) > 1 else 8080
    sys.stdout.write(shell_exports(airflow_env(Settings(), repo_root, port=port)))


if __name__ == "__main__":
    main()

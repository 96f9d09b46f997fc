"""The local-dev Airflow's environment: everything under ``<POSTERGENRE_HOME>/airflow``, DAGs from the repo.

Airflow reads its configuration when ``airflow`` is first imported, so these variables must be in the
environment before that: ``scripts/airflow-local.sh`` (``make airflow``) evals
``PYTHONPATH=tests python -m support.airflow_env`` and the test plugin sets them at start-up. This module must
therefore never import airflow itself. It lives with the test support code, outside the shipped package: its
secrets and single-user login have no place in a production image (docker/ configures that stack).

Choices, for a laptop or a 2-core CI box: SQLite metadata DB; LocalExecutor with parallelism 4 (Airflow 3
runs it on SQLite; the default of 32 forks 32 workers); one API worker and one parsing process; the simple
auth manager with one ``admin`` user whose password sits in a known file; fixed JWT and API secrets so that
every component (and a restarted one) agrees without shared state. The secrets are for local runs only.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from postergenre.config import Settings

ADMIN_USER = "admin"
LOCAL_JWT_SECRET = "postergenre-local-jwt-secret-not-for-production-only-for-the-embedded-default"
LOCAL_API_SECRET = "postergenre-local-api-secret-not-for-production"
SIMPLE_AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"


def airflow_home(settings: Settings) -> Path:
    return settings.home / "airflow"


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
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": "4",
        # Parsing imports airflow (seconds on a busy 2-core box): give it room, and look for new files often.
        "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "120",
        "AIRFLOW__DAG_PROCESSOR__DAG_FILE_PROCESSOR_TIMEOUT": "180",
        "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
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

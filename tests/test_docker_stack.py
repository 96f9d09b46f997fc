"""Static validation of the production stack in docker/ (no Docker engine needed).

The compose file and Dockerfile are checked by the real tools (docker-compose ``config``, hadolint); the
stack's invariants (every Airflow 3 role, GPU routing, secrets only from the environment, pinned images,
health-gated start order) are asserted on the YAML resolved against docker/.env.example; the shell scripts the
stack runs are executed against stub ``mc``/``curl``/``psql``/... binaries that record their calls.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from postergenre.airflow_pools import GPU_POOL

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "docker-compose.yaml"
ENV_EXAMPLE = DOCKER / ".env.example"
DOCKERFILE = DOCKER / "Dockerfile"
RUNTIME_LOCK = ROOT / "requirements" / "runtime.txt"
DEV_LOCK = ROOT / "requirements" / "lock.txt"

AIRFLOW_SERVICES = {
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
    "airflow-worker-gpu",
}
ONE_SHOT = {"airflow-init", "minio-init"}
SECRET_NAME = re.compile(r"(PASSWORD|SECRET|SECRET_KEY|FERNET_KEY|ACCESS_KEY|_AUTH)$")
# Compose interpolation: $$ escape, ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?err}, ${VAR?err}, $VAR.
INTERPOLATION = re.compile(r"\$\$|\$\{([A-Za-z_]\w*)(?:(:?[-?])([^}]*))?\}|\$([A-Za-z_]\w*)")


# --- helpers ----------------------------------------------------------------------------------------------


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def require_tool(name: str) -> str:
    """Path of a CLI tool; outside CI a missing tool skips, under CI it fails (CI must install it)."""
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found:
        return found
    reason = f"{name} not installed (scripts/system-deps.sh / make install provide it)"
    if in_ci():
        pytest.fail(f"CI is set but {reason}")
    pytest.skip(reason)


def read_env_file(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line and line[0] != "#")
    return {key.strip(): value.strip() for key, value in pairs}


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's variable substitution, enough for this file (raises KeyError where Compose would refuse)."""

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group(1) or match.group(4), match.group(2), match.group(3)
        value = env.get(name)
        missing = value is None or (value == "" and op is not None and op.startswith(":"))
        if not missing:
            return value
        if op and op.endswith("?"):
            raise KeyError(f"{name}: {arg}")
        return arg if op else ""

    return INTERPOLATION.sub(substitute, text)


def resolve(node: Any, env: dict[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [resolve(item, env) for item in node]
    if isinstance(node, dict):
        return {key: resolve(value, env) for key, value in node.items()}
    return node


def strings_in(node: Any) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        node = [*node.keys(), *node.values()]
    return [s for item in node for s in strings_in(item)] if isinstance(node, list) else []


def referenced_variables(node: Any) -> set[str]:
    """Variables Compose interpolates anywhere in the parsed file (comments excluded)."""
    return {
        m.group(1) or m.group(4)
        for text in strings_in(node)
        for m in INTERPOLATION.finditer(text)
        if m.group(0) != "$$"
    }


def queues_of(command: str | list[str]) -> set[str]:
    """Queues a ``celery worker`` command consumes (Airflow's default queue when none is given)."""
    args = command.split() if isinstance(command, str) else list(command)
    for i, arg in enumerate(args):
        if arg in {"--queues", "-q"}:
            return set(args[i + 1].split(","))
        if arg.startswith("--queues="):
            return set(arg.split("=", 1)[1].split(","))
    return {"default"}


def compose_env_without_example() -> dict[str, str]:
    """The process environment minus every .env.example variable, so the file alone is what gets checked."""
    documented = read_env_file(ENV_EXAMPLE)
    return {k: v for k, v in os.environ.items() if k not in documented}


def make_stubs(tmp_path: Path, names: list[str], script: str = "") -> Path:
    """A bin dir whose commands log ``name args...`` to $STUB_LOG, run `script`, and exit $STUB_RC."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in names:
        stub = bin_dir / name
        stub.write_text(f'#!/bin/sh\necho "{name} $*" >> "$STUB_LOG"\n{script}\nexit "${{STUB_RC:-0}}"\n')
        stub.chmod(stub.stat().st_mode | stat.S_IXUSR)
    return bin_dir


def run_with_stubs(cmd: list[str], bin_dir: Path, log: Path, **env: str) -> subprocess.CompletedProcess[str]:
    path = f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}"
    full_env = {"PATH": path, "STUB_LOG": str(log), "HOSTNAME": "testhost", **env}
    return subprocess.run(cmd, env=full_env, capture_output=True, text=True, timeout=30)


def calls(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


@pytest.fixture(scope="module")
def example_env() -> dict[str, str]:
    return read_env_file(ENV_EXAMPLE)


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def services(raw: dict[str, Any], example_env: dict[str, str]) -> dict[str, dict[str, Any]]:
    return resolve(raw, example_env)["services"]


# --- the real tools ---------------------------------------------------------------------------------------


def compose_config(env_file: Path) -> subprocess.CompletedProcess[str]:
    tool = require_tool("docker-compose")
    cmd = [tool, "-f", str(COMPOSE), "--env-file", str(env_file), "config", "-q"]
    return subprocess.run(cmd, env=compose_env_without_example(), capture_output=True, text=True, timeout=60)


def test_compose_config_resolves_with_env_example() -> None:
    result = compose_config(ENV_EXAMPLE)
    assert result.returncode == 0, result.stderr


def test_compose_config_refuses_to_start_without_a_secret(tmp_path: Path) -> None:
    env_file = tmp_path / "no-jwt.env"
    kept = [
        ln
        for ln in ENV_EXAMPLE.read_text().splitlines()
        if not ln.startswith("AIRFLOW__API_AUTH__JWT_SECRET=")
    ]
    env_file.write_text("\n".join(kept) + "\n")
    result = compose_config(env_file)
    assert result.returncode != 0
    assert "AIRFLOW__API_AUTH__JWT_SECRET" in result.stderr


def test_dockerfile_is_hadolint_clean_at_error_level() -> None:
    hadolint = require_tool("hadolint")
    result = subprocess.run(
        [hadolint, "--failure-threshold", "error", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_threshold_still_rejects_errors(tmp_path: Path) -> None:
    """Guards the gate itself: an error-level finding (relative WORKDIR, DL3000) fails the same command."""
    hadolint = require_tool("hadolint")
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM apache/airflow:3.3.2-python3.11\nWORKDIR relative/dir\n")
    result = subprocess.run(
        [hadolint, "--failure-threshold", "error", str(bad)], capture_output=True, text=True
    )
    assert result.returncode != 0
    assert "DL3000" in result.stdout


def test_check_docker_script_passes() -> None:
    require_tool("docker-compose")
    require_tool("hadolint")
    env = compose_env_without_example()
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "check-docker.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- the compose file's invariants ------------------------------------------------------------------------


def test_every_airflow3_role_and_backing_service_is_present(services: dict[str, Any]) -> None:
    assert AIRFLOW_SERVICES | {"postgres", "redis", "minio", "minio-init"} <= set(services)
    # Airflow 2's name; Airflow 3 serves the UI from the api-server.
    assert "airflow-webserver" not in services
    assert services["airflow-apiserver"]["command"] == "api-server"
    assert any(p.endswith(":8080") for p in services["airflow-apiserver"]["ports"])


def test_airflow_services_share_celery_executor_and_execution_api(services: dict[str, Any]) -> None:
    for name in AIRFLOW_SERVICES:
        env = services[name]["environment"]
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
        assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://")
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql")
        assert env["AIRFLOW__CORE__FERNET_KEY"] and env["AIRFLOW__API_AUTH__JWT_SECRET"]
        assert env["POSTERGENRE_DB_URL"].startswith("postgresql+psycopg://")
        assert env["AWS_ENDPOINT_URL_S3"] == "http://minio:9000"


def test_gpu_worker_takes_only_the_gpu_queue_on_one_nvidia_gpu(services: dict[str, Any]) -> None:
    gpu = services["airflow-worker-gpu"]
    assert queues_of(gpu["command"]) == {"gpu"}
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert gpu["build"]["args"]["TENSORFLOW_DIST"] == "tensorflow[and-cuda]"
    assert gpu["image"] != services["airflow-worker"]["image"]


def test_default_worker_never_takes_the_gpu_queue(services: dict[str, Any]) -> None:
    worker = services["airflow-worker"]
    queues = queues_of(worker["command"])
    assert "gpu" not in queues
    assert queues == {worker["environment"]["AIRFLOW__OPERATORS__DEFAULT_QUEUE"]}
    assert "deploy" not in worker


def test_gpu_tasks_use_the_pool_init_creates_with_the_configured_size(services: dict[str, Any]) -> None:
    init = services["airflow-init"]
    script = init["command"][-1]
    assert re.search(r"airflow pools set \"\$\{?POSTERGENRE_GPU_POOL\}?\" \"\$\{?POSTERGENRE_GPU_POOL_SLOTS", script)
    assert int(init["environment"]["POSTERGENRE_GPU_POOL_SLOTS"]) >= 1
    # Unset, the GPU tasks would run in default_pool: every role that parses or runs the DAG names the pool
    assert init["environment"]["POSTERGENRE_GPU_POOL"] == GPU_POOL
    for role in ("airflow-scheduler", "airflow-dag-processor", "airflow-worker", "airflow-worker-gpu"):
        assert services[role]["environment"]["POSTERGENRE_GPU_POOL"] == GPU_POOL, role
    assert init["environment"]["_AIRFLOW_DB_MIGRATE"] == "true"
    assert "postergenre db upgrade" in script


def test_secrets_come_only_from_required_variables(raw: dict[str, Any], example_env: dict[str, str]) -> None:
    required = re.compile(r"\$\{[A-Za-z_]\w*:\?[^}]*\}")
    for name, service in raw["services"].items():
        env = service.get("environment") or {}
        for key, value in env.items():
            if SECRET_NAME.search(key):
                assert required.fullmatch(str(value)), f"{name}.{key} must be ${{VAR:?...}}, got {value!r}"
    text = COMPOSE.read_text()
    for url_password in (p for s in strings_in(raw) for p in re.findall(r"://[^:/@\s]*:([^@\s]*)@", s)):
        assert required.fullmatch(url_password), (
            f"credential in URL not from a required variable: {url_password}"
        )
    for key, value in example_env.items():
        if SECRET_NAME.search(key) and value:
            assert value not in text, f"the value of {key} is hard-coded in the compose file"


def test_env_example_documents_exactly_the_variables_compose_reads(
    raw: dict[str, Any], example_env: dict[str, str]
) -> None:
    used = referenced_variables(raw)
    assert used - set(example_env) == set(), "undocumented in .env.example"
    unused = {k for k in set(example_env) - used if not k.startswith("COMPOSE_")}
    assert unused == set(), "documented in .env.example but unused by the compose file"


def test_images_are_pinned(services: dict[str, Any]) -> None:
    for name, service in services.items():
        image = service["image"]
        repo, sep, tag = image.rpartition(":")
        assert sep and "/" not in tag and tag not in {"", "latest"}, f"{name}: {image} is not pinned"


def test_start_order_is_health_gated(services: dict[str, Any]) -> None:
    for name, service in services.items():
        for dep, spec in service.get("depends_on", {}).items():
            expected = "service_completed_successfully" if dep in ONE_SHOT else "service_healthy"
            assert spec["condition"] == expected, f"{name} -> {dep}"
            assert dep in services
            if dep not in ONE_SHOT:
                assert "healthcheck" in services[dep], f"{name} waits on {dep}, which has no healthcheck"
        if name in ONE_SHOT:
            assert service["restart"] == "no"
        else:
            assert service["restart"] == "always"
            assert not service["healthcheck"].get("disable"), name
    for worker in ("airflow-worker", "airflow-worker-gpu"):
        assert {"minio-init", "airflow-init", "airflow-apiserver"} <= set(services[worker]["depends_on"])


def test_minio_init_runs_the_bucket_script_after_minio_is_healthy(services: dict[str, Any]) -> None:
    init = services["minio-init"]
    assert init["image"].startswith("minio/mc:")
    assert "./minio-init.sh:/minio-init.sh:ro" in init["volumes"]
    assert init["entrypoint"] == ["/bin/sh", "/minio-init.sh"]
    assert init["depends_on"]["minio"]["condition"] == "service_healthy"


def test_postgres_gets_the_second_database_script(services: dict[str, Any]) -> None:
    volumes = services["postgres"]["volumes"]
    assert any(v.startswith("./postgres-init.sh:/docker-entrypoint-initdb.d/") for v in volumes)
    env = services["postgres"]["environment"]
    db_url = services["airflow-worker"]["environment"]["POSTERGENRE_DB_URL"]
    assert db_url.endswith(f"/{env['POSTERGENRE_DB_NAME']}")
    assert f"//{env['POSTERGENRE_DB_USER']}:{env['POSTERGENRE_DB_PASSWORD']}@" in db_url
    # Executed (not sourced) by the postgres entrypoint only when executable.
    assert os.access(DOCKER / "postgres-init.sh", os.X_OK)


# --- the Dockerfile ---------------------------------------------------------------------------------------


def test_dockerfile_base_matches_the_locked_airflow_and_python() -> None:
    locked = re.search(r"^apache-airflow==(\S+)$", RUNTIME_LOCK.read_text(), re.M)
    assert locked
    base = re.findall(r"^FROM\s+(\S+)", DOCKERFILE.read_text(), re.M)
    assert base == [f"apache/airflow:{locked.group(1)}-python3.11"]


def test_dockerfile_runs_as_non_root_and_gpu_swap_has_a_target() -> None:
    text = DOCKERFILE.read_text()
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1] not in {"root", "0"} and not users[-1].startswith("0:")
    assert "ARG TENSORFLOW_DIST=tensorflow-cpu" in text
    assert re.search(r"^tensorflow-cpu==\S+$", RUNTIME_LOCK.read_text(), re.M)
    for copied in re.findall(r"^COPY\s+(?:--\S+\s+)*(\S+)", text, re.M):
        assert (ROOT / copied).exists(), f"COPY source {copied} missing"


def test_dockerfile_installs_the_runtime_lock_only_and_checks_it() -> None:
    """The image gets no dev or test tools, and the pip install on top of the base image's providers is
    followed by ``pip check`` in the same layer, so an inconsistent combination fails the build."""
    text = DOCKERFILE.read_text()
    copied = re.findall(r"^COPY\s+(?:--\S+\s+)*(\S+)", text, re.M)
    assert "requirements/runtime.txt" in copied
    assert not [c for c in copied if c.startswith("requirements/") and c != "requirements/runtime.txt"]
    runs = [" ".join(r.split()) for r in re.findall(r"^RUN\s+((?:.*\\\n)*.*)$", text, re.M)]
    (install,) = [r for r in runs if "pip install --no-cache-dir -r" in r]
    assert install.index("pip install") < install.index("&& pip check")
    ignore = (DOCKER / "Dockerfile.dockerignore").read_text().splitlines()
    assert "!requirements/runtime.txt" in ignore and "!requirements/lock.txt" not in ignore


# --- the scripts the stack runs ---------------------------------------------------------------------------


def minio_stub(tmp_path: Path) -> Path:
    """A stateful `mc`: `admin user info` prints the policy once `admin policy attach` has run."""
    state = tmp_path / "attached"
    script = (
        f'case "$*" in "admin user info"*) cat "{state}" 2>/dev/null || true;; '
        f'"admin policy attach"*) echo "PolicyName: $5" > "{state}";; esac'
    )
    return make_stubs(tmp_path, ["mc"], script)


def run_minio_init(
    bin_dir: Path, log: Path, env: dict[str, str], **extra: str
) -> subprocess.CompletedProcess[str]:
    keys = ("MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
    script_env = {k: env[k] for k in keys} | {
        "POSTERGENRE_STORE_URL": "s3://my-data/some/prefix",
        "POSTERGENRE_REGISTRY_URL": "s3://my-registry/registry",
    }
    return run_with_stubs(["sh", str(DOCKER / "minio-init.sh")], bin_dir, log, **(script_env | extra))


def test_minio_init_creates_both_buckets_and_versions_only_the_registry(
    tmp_path: Path, example_env: dict[str, str]
) -> None:
    log = tmp_path / "calls.log"
    result = run_minio_init(minio_stub(tmp_path), log, example_env)
    assert result.returncode == 0, result.stderr
    made = calls(log)
    assert "mc mb --ignore-existing local/my-data local/my-registry" in made
    versioned = [c for c in made if c.startswith("mc version enable")]
    assert versioned == ["mc version enable local/my-registry"]
    assert f"mc admin policy attach local postergenre-rw --user {example_env['AWS_ACCESS_KEY_ID']}" in made


def test_minio_init_is_idempotent(tmp_path: Path, example_env: dict[str, str]) -> None:
    bin_dir = minio_stub(tmp_path)
    first, second = tmp_path / "first.log", tmp_path / "second.log"
    assert run_minio_init(bin_dir, first, example_env).returncode == 0
    rerun = run_minio_init(bin_dir, second, example_env)
    assert rerun.returncode == 0, rerun.stderr
    assert [c for c in calls(first) if "policy attach" in c]
    # Already attached: not attached twice.
    assert not [c for c in calls(second) if "policy attach" in c]
    assert [c for c in calls(second) if c.startswith("mc mb")] == [
        c for c in calls(first) if c.startswith("mc mb")
    ]


def test_minio_init_stops_at_the_first_failing_step(tmp_path: Path, example_env: dict[str, str]) -> None:
    log = tmp_path / "calls.log"
    result = run_minio_init(make_stubs(tmp_path, ["mc"]), log, example_env, STUB_RC="1")
    assert result.returncode != 0
    assert len(calls(log)) == 1  # `mc alias set` failed; nothing after it ran


@pytest.mark.parametrize(
    ("role", "probe"),
    [
        ("api-server", "curl"),
        ("scheduler", "curl"),
        ("dag-processor", "airflow jobs check --job-type DagProcessorJob --hostname testhost"),
        ("triggerer", "airflow jobs check --job-type TriggererJob --hostname testhost"),
        ("worker", "celery"),
    ],
)
def test_healthcheck_probes_each_role(tmp_path: Path, role: str, probe: str) -> None:
    bin_dir = make_stubs(tmp_path, ["curl", "airflow", "celery"])
    log = tmp_path / "calls.log"
    ok = run_with_stubs(["bash", str(DOCKER / "healthcheck.sh"), role], bin_dir, log)
    assert ok.returncode == 0, ok.stderr
    (called,) = calls(log)
    assert called.startswith(probe)
    if role == "worker":
        assert "inspect ping --destination celery@testhost" in called
    failing = run_with_stubs(["bash", str(DOCKER / "healthcheck.sh"), role], bin_dir, log, STUB_RC="7")
    assert failing.returncode == 7


def test_healthcheck_has_nothing_to_probe_for_one_shot_commands(tmp_path: Path) -> None:
    bin_dir = make_stubs(tmp_path, ["curl", "airflow", "celery"])
    log = tmp_path / "calls.log"
    result = run_with_stubs(["bash", str(DOCKER / "healthcheck.sh"), "airflow db migrate"], bin_dir, log)
    assert result.returncode == 0
    assert calls(log) == []


def test_every_compose_healthcheck_role_hits_a_real_probe(tmp_path: Path, services: dict[str, Any]) -> None:
    bin_dir = make_stubs(tmp_path, ["curl", "airflow", "celery"])
    for name in AIRFLOW_SERVICES - ONE_SHOT:
        test = services[name]["healthcheck"]["test"]
        assert test[:3] == ["CMD", "bash", "/opt/postergenre/healthcheck.sh"], name
        log = tmp_path / f"{name}.log"
        result = run_with_stubs(["bash", str(DOCKER / "healthcheck.sh"), *test[3:]], bin_dir, log)
        assert result.returncode == 0 and len(calls(log)) == 1, f"{name}: role {test[3:]} probes nothing"


def test_postgres_init_creates_role_and_database_from_the_environment(tmp_path: Path) -> None:
    bin_dir = make_stubs(tmp_path, ["psql"], 'cat >> "$STUB_LOG"')
    log = tmp_path / "calls.log"
    env = {"POSTGRES_USER": "airflow", "POSTGRES_DB": "airflow", "POSTERGENRE_DB_NAME": "pg_db"}
    env |= {"POSTERGENRE_DB_USER": "pg_user", "POSTERGENRE_DB_PASSWORD": "it's secret"}
    result = run_with_stubs(["bash", str(DOCKER / "postgres-init.sh")], bin_dir, log, **env)
    assert result.returncode == 0, result.stderr
    psql_call, *sql = calls(log)
    assert "-v db=pg_db -v owner=pg_user -v password=it's secret" in psql_call
    assert "ON_ERROR_STOP=1" in psql_call
    assert sql == [
        "CREATE ROLE :\"owner\" LOGIN PASSWORD :'password';",
        'CREATE DATABASE :"db" OWNER :"owner";',
    ]
    del env["POSTERGENRE_DB_PASSWORD"]
    missing = run_with_stubs(
        ["bash", str(DOCKER / "postgres-init.sh")], bin_dir, tmp_path / "none.log", **env
    )
    assert missing.returncode != 0

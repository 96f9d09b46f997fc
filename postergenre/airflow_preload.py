"""Warm task starts on Airflow: import the heavy, fork-safe libraries once in the process that forks tasks.

On Linux Airflow 3's task supervisor forks each task process (no exec) from a long-lived process: a
LocalExecutor worker (itself forked from the scheduler) or a Celery pool process (forked from the Celery worker).
Whatever that process has imported, every task gets for free (benchmarks/bench_orchestration.py: a 30-task
retrain used 150-178 CPU-s without the preload, 97-120 with it). ``airflow_local_settings.py`` (on Airflow's
``$AIRFLOW_HOME/config`` path) calls :func:`install`, which preloads in a LocalExecutor scheduler and a Celery
worker only: the api-server, dag-processor, triggerer and every ``airflow`` CLI call stay as lean as before.

What is preloaded is third-party only, never postergenre (a long-lived preloaded copy would hide edits to the
library from tasks until a restart) and never Keras or TensorFlow: Keras fixes its backend at import and head
tasks (JAX) and pixel tasks (TensorFlow) share the workers, and TensorFlow starts thread pools at import that a
bare ``fork`` does not carry over. JAX is imported but never initialised: importing it starts no thread (its
backends, ``jax.devices()`` and its 12 threads, start on first use, in the task), and it is most of Keras'
import in a head task (``import keras, keras_tuner`` in a forked child: 3-4 s -> 1.4-1.9 s on a loaded 2-core
box). The libraries here start no threads at import but OpenBLAS's (numpy, scipy) and jemalloc's background
thread (pyarrow), which re-initialise in a forked child (``pthread_atfork`` handlers): 30 forks in a row each ran BLAS, pandas, Parquet,
scikit-learn and boto3 work to the end. numpy is what Airflow's own Celery integration preloads too. This module
imports nothing heavy itself: it must stay importable in every Airflow process.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

PRELOAD = (
    "numpy",
    "pandas",
    "pyarrow",
    "pyarrow.parquet",
    "scipy",
    "sklearn.metrics",
    "PIL.Image",
    "h5py",
    "boto3",
    "botocore.session",
    "s3transfer.manager",
    "sqlalchemy",
    "pydantic",
    "jax",
    "jax.numpy",
    "jax.experimental.pallas.ops.tpu.splash_attention",  # what Keras' JAX backend imports (0.5 s)
)
"""What head tasks import before their step runs (``python -X importtime``, bench_orchestration)."""
FORBIDDEN = ("tensorflow", "keras", "torch", "postergenre.steps")
"""Never in a forking parent: see the module docstring. Checked after preloading, with JAX's backends."""
PRELOAD_ENV = "POSTERGENRE_AIRFLOW_PRELOAD"
"""``0`` turns the preload off (to measure it, or to rule it out)."""

log = logging.getLogger(__name__)


def forks_tasks(argv: Sequence[str], executor: str | None = None) -> bool:
    """Whether ``argv`` (``sys.argv``) is an ``airflow`` command whose process forks task processes: a Celery
    worker, or a scheduler whose executor (``[core] executor``, read when not given) is the LocalExecutor."""
    if not argv or Path(argv[0]).name != "airflow":
        return False
    words = [a for a in argv[1:] if not a.startswith("-")]
    if words[:2] == ["celery", "worker"]:
        return True
    return words[:1] == ["scheduler"] and "LocalExecutor" in (executor or _configured_executor())


def _configured_executor() -> str:
    from airflow.configuration import conf  # loaded before the local settings are imported

    return conf.get("core", "executor", fallback="LocalExecutor")


def preload(modules: Sequence[str] = PRELOAD) -> dict[str, float]:
    """Import ``modules`` (a missing one is skipped); returns seconds per module."""
    took: dict[str, float] = {}
    for name in modules:
        started = time.perf_counter()
        try:
            importlib.import_module(name)
        except ImportError as exc:
            log.warning("postergenre preload: %s not imported: %s", name, exc)
            continue
        took[name] = round(time.perf_counter() - started, 3)
    return took


def loaded_forbidden() -> list[str]:
    """Forbidden modules a preload pulled in (a library started importing a framework at top level), and
    ``jax backends`` if something initialised JAX (its threads would not survive the fork)."""
    leaked = sorted({m for m in sys.modules for f in FORBIDDEN if m == f or m.startswith(f + ".")})
    bridge = sys.modules.get("jax._src.xla_bridge")
    if getattr(bridge, "_backends", None):  # private, hence getattr: empty until the first device use
        leaked.append("jax backends")
    return leaked


def install(argv: Sequence[str] | None = None) -> dict[str, float]:
    """Preload when this process forks tasks; called from ``airflow_local_settings.py``."""
    if os.environ.get(PRELOAD_ENV, "1") == "0" or not forks_tasks(sys.argv if argv is None else argv):
        return {}
    took = preload()
    leaked = loaded_forbidden()
    if leaked:
        log.error("postergenre preload pulled in %s: task processes inherit it", ", ".join(leaked[:5]))
    print(f"postergenre preload: {len(took)} modules in {sum(took.values()):.1f} s", file=sys.stderr)
    return took


LOCAL_SETTINGS = '''"""Airflow's local settings (written by postergenre): warm task starts, see postergenre.airflow_preload."""

from postergenre.airflow_preload import install

install()
'''
"""The ``$AIRFLOW_HOME/config/airflow_local_settings.py`` the local stack and the image install."""


def write_local_settings(config_dir: Path) -> Path:
    """``config_dir/airflow_local_settings.py`` (``$AIRFLOW_HOME/config``), rewritten only when it differs."""
    path = Path(config_dir) / "airflow_local_settings.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text() != LOCAL_SETTINGS:
        path.write_text(LOCAL_SETTINGS)
    return path


if __name__ == "__main__":  # the image: python -m postergenre.airflow_preload /opt/airflow/config
    print(write_local_settings(Path(sys.argv[1])))

"""The scheduler's preload (postergenre.airflow_preload): what task processes inherit, and that a forked task
still runs Keras on JAX and TensorFlow after it."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from postergenre.airflow_preload import FORBIDDEN, LOCAL_SETTINGS, PRELOAD, forks_tasks, write_local_settings


@pytest.mark.parametrize(
    ("argv", "executor", "forks"),
    [
        (["/venv/bin/airflow", "scheduler"], "LocalExecutor", True),
        (["/venv/bin/airflow", "scheduler"], "CeleryExecutor", False),  # Celery workers fork, not the scheduler
        (["airflow", "celery", "worker", "-q", "gpu"], "CeleryExecutor", True),
        (["airflow", "api-server"], "LocalExecutor", False),
        (["airflow", "dag-processor"], "LocalExecutor", False),
        (["python", "-m", "pytest"], "LocalExecutor", False),
    ],
)
def test_only_processes_that_fork_tasks_preload(argv, executor, forks):
    assert forks_tasks(argv, executor) is forks


def test_the_preload_has_no_framework_that_cannot_be_forked():
    assert not {m.split(".")[0] for m in PRELOAD} & {f.split(".")[0] for f in FORBIDDEN}


def test_the_local_settings_file_is_written_once(tmp_path):
    path = write_local_settings(tmp_path)
    assert path.read_text() == LOCAL_SETTINGS
    mtime = path.stat().st_mtime_ns
    assert write_local_settings(tmp_path).stat().st_mtime_ns == mtime


CHILD = textwrap.dedent(
    """
    import os, sys
    from postergenre.airflow_preload import PRELOAD, install, loaded_forbidden, preload
    preload([m for m in PRELOAD if not m.startswith("jax")])  # OpenBLAS' threads: re-created in a fork
    before = len(os.listdir("/proc/self/task"))
    took = install(["airflow", "scheduler"])
    assert "jax" in took and not loaded_forbidden(), (took, loaded_forbidden())
    assert len(os.listdir("/proc/self/task")) == before, "importing JAX started threads a fork would lose"
    for backend in ("jax", "tensorflow"):  # a head task and a pixel task, each forked from this process
        pid = os.fork()
        if pid == 0:
            os.environ["KERAS_BACKEND"] = backend
            import numpy as np
            import keras
            model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, activation="sigmoid")])
            model.compile("adam", "binary_crossentropy")
            x = np.random.default_rng(0).random((32, 4), dtype=np.float32)
            model.fit(x, (x[:, :1] > 0.5).astype("float32"), epochs=1, verbose=0)
            os._exit(0 if keras.backend.backend() == backend else 3)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, (backend, status)
    print("ok")
    """
)


@pytest.mark.slow
def test_a_forked_task_runs_keras_on_jax_and_on_tensorflow_after_the_preload():
    env = {"POSTERGENRE_AIRFLOW_PRELOAD": "1", "AIRFLOW__CORE__EXECUTOR": "LocalExecutor", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]


@pytest.mark.slow
def test_a_head_task_trains_saves_and_loads_models_without_importing_tensorflow():
    """head_backend(): Keras on JAX, and Keras never imports TensorFlow behind it (to seed tf.data, or to
    recognise tf.TensorShape while saving): 3-5 s and ~300 MB per head task."""
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    probe = Path(__file__).parent / "support" / "head_task_probe.py"
    done = subprocess.run([sys.executable, str(probe)], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[0] == "jax" and lines[-1].startswith("tf imported: False"), done.stdout

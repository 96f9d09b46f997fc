"""What every retrain task does around its library step: pick the Keras backend before Keras is imported, turn
deterministic errors into failures that are not retried, and the checks the gate runs before any work.

Imports only the standard library and ``airflow.sdk`` at top level (DAG files import it at parse time).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

from airflow.sdk.exceptions import AirflowFailException

HEAD_BACKEND_ENV = "POSTERGENRE_HEAD_BACKEND"
GPU_POOL_ENV = "POSTERGENRE_GPU_POOL"
STALE_TICK_ENV = "POSTERGENRE_STALE_TICK_MINUTES"
PIXEL_TIMEOUT_ENV = "POSTERGENRE_PIXEL_TIMEOUT_HOURS"
DEFAULT_POOL = "default_pool"
_T = TypeVar("_T")


def use_keras_backend(backend: str) -> str:
    """Run this task's Keras on ``backend`` (``jax`` for heads, ``tensorflow`` for pixels): effective only
    before Keras is first imported in the process, which is the case in a fresh task process. Returns the
    backend in force."""
    if "keras" not in sys.modules:
        os.environ["KERAS_BACKEND"] = backend
    return os.environ.get("KERAS_BACKEND", "tensorflow")


def head_backend() -> str:
    """Trials, training on cached features, evaluation and promotion: a light backend (default JAX on CPU),
    without Keras importing TensorFlow behind it; the pixel tasks (embed, fine-tune) keep TensorFlow and
    tf.data."""
    backend = use_keras_backend(os.environ.get(HEAD_BACKEND_ENV, "jax"))
    if backend != "tensorflow":
        from postergenre.models import keras_without_tensorflow

        keras_without_tensorflow()
    return backend


def pixel_backend() -> str:
    return use_keras_backend("tensorflow")


def deterministic_errors() -> tuple[type[BaseException], ...]:
    """Errors that a retry cannot fix: bad input, bad settings, a refused request. Store and network errors
    (``StoreError`` but its ``InvalidKey``) stay retryable."""
    from postergenre.registry import RegistryError

    return (ValueError, LookupError, TypeError, RegistryError)


def run_step(step: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
    """Call a library step; a deterministic error fails the task at once with a one-line reason."""
    from postergenre.storage import InvalidKey, NotFound, StoreError

    try:
        return step(*args, **kwargs)
    except (NotFound, InvalidKey) as exc:  # a missing input stays missing on a retry
        raise AirflowFailException(_one_line(exc)) from None
    except StoreError:
        raise
    except deterministic_errors() as exc:
        raise AirflowFailException(_one_line(exc)) from None


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def gpu_pool() -> str:
    """The pool of the GPU tasks: ``POSTERGENRE_GPU_POOL`` (production: ``postergenre_gpu``, created by the
    stack), else Airflow's ``default_pool``, so a fresh Airflow never waits on a pool nobody created."""
    return os.environ.get(GPU_POOL_ENV, "").strip() or DEFAULT_POOL


def pixel_timeout() -> timedelta:
    """The embed and fine-tune tasks' own execution timeout (hours, ``POSTERGENRE_PIXEL_TIMEOUT_HOURS``)."""
    return timedelta(hours=float(os.environ.get(PIXEL_TIMEOUT_ENV, "6")))


def check_pool_exists(name: str, lookup: Callable[[str], Any] | None = None) -> str:
    """Refuse a run whose GPU tasks would wait forever on a pool that does not exist.

    Read from Airflow's metadata DB where the task may (``dag.test()``, in-process runs); a task process of a
    real deployment may not read the DB (Airflow 3), and there the pool is created by the stack's init. Returns
    what was checked, for the log."""
    if name == DEFAULT_POOL:
        return f"pool {name}: always exists"
    try:
        found = (lookup or _pool_from_db)(name)
    except RuntimeError as exc:  # "Direct database access via the ORM is not allowed"
        return f"pool {name}: not verifiable from this task ({exc}); {GPU_POOL_ENV} names it"
    if found is None:
        raise AirflowFailException(
            f"pool {name!r} does not exist: the embed and fine-tune tasks would never be scheduled; "
            f"create it (airflow pools set {name} 1 'GPU tasks') or unset {GPU_POOL_ENV}"
        )
    return f"pool {name}: exists"


def _pool_from_db(name: str) -> Any:
    from airflow.models.pool import Pool

    return Pool.get_pool(name)


def stale_tick(run_type: str, logical_date: datetime | None, now: datetime, grace: timedelta) -> str | None:
    """Why a scheduled run should not retrain: its cron tick lies further in the past than ``grace`` (the DAG
    was unpaused after its tick, or the scheduler was down); None when it is on time or not scheduled."""
    if run_type != "scheduled" or logical_date is None:
        return None
    late = now - logical_date
    if late <= grace:
        return None
    return f"scheduled tick {logical_date.isoformat()} is {late} old (> {grace}): not retraining for a past tick"


def stale_grace() -> timedelta:
    return timedelta(minutes=float(os.environ.get(STALE_TICK_ENV, "60")))


def refuse_backfill_ingest(run_type: str, requested_snapshot_id: str | None) -> None:
    """A backfill re-runs past dates, but the source export is today's: ingesting it under a past date's id
    would publish today's data as a past snapshot."""
    if run_type == "backfill" and not requested_snapshot_id:
        raise AirflowFailException(
            "a backfill does not ingest today's export under a past date; name a snapshot_id, or train a "
            "backfill on existing snapshots (no source)"
        )

"""What a registered version says about itself: its signature (what it takes and returns) and where it comes
from (code, image, Airflow run), so serving can check what it loads and an operator can trace a model back."""

from __future__ import annotations

import os
import subprocess
from functools import lru_cache
from pathlib import Path

import postergenre
from postergenre.feature_cache import CACHE_VERSION

PREPROCESSING = f"letterbox-{CACHE_VERSION}"
"""Decode (EXIF orientation applied), letterbox to a square with black bars, float32 RGB in [0, 255]: the
model's own layers normalise. Bumped with the feature cache, whose vectors depend on it too."""
SIGNATURE_SCHEMA = 1
IMAGE_DIGEST_ENV = "POSTERGENRE_IMAGE_DIGEST"
_AIRFLOW_ENV = {
    "dag_id": "AIRFLOW_CTX_DAG_ID",
    "run_id": "AIRFLOW_CTX_DAG_RUN_ID",
    "task_id": "AIRFLOW_CTX_TASK_ID",
    "try_number": "AIRFLOW_CTX_TRY_NUMBER",
}


def signature(
    *, model: str, classes: list[str], kind: str, image_size: int, backbone: str, weights_id: str
) -> dict:
    """``signature.json``: input size and preprocessing, output kind and class order, backbone and weights."""
    return {
        "schema": SIGNATURE_SCHEMA,
        "model": model,
        "kind": kind,
        "classes": list(classes),
        "input": {"image_size": image_size, "channels": 3, "dtype": "float32", "range": [0, 255],
                  "preprocessing": PREPROCESSING},
        "backbone": backbone,
        "weights_id": weights_id,
    }


def serving_key(sig: dict) -> tuple:
    """What must agree for models to score the same poster tensor (an OvA ensemble's members)."""
    return (sig["input"]["image_size"], sig["input"]["preprocessing"], sig["backbone"], sig["weights_id"])


@lru_cache(maxsize=1)
def git_revision() -> dict:
    """The checkout's commit (and whether it had local changes), when the package runs from one."""
    here = Path(postergenre.__file__).resolve().parent

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=here, capture_output=True, text=True, timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    sha = git("rev-parse", "HEAD")
    if not sha:
        return {"git_sha": None}
    return {"git_sha": sha, "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}


def provenance() -> dict:
    """Code version, git revision, container image digest and the Airflow task that produced a version."""
    airflow = {key: os.environ[var] for key, var in _AIRFLOW_ENV.items() if os.environ.get(var)}
    return {
        "code_version": postergenre.__version__,
        **git_revision(),
        "image_digest": os.environ.get(IMAGE_DIGEST_ENV) or None,
        "airflow": airflow or None,
    }

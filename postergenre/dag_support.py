"""Small helpers shared by the DAG files: default task arguments, the alert notifier, the snapshot Asset,
the GPU pool name and the trigger-form Params.

DAG files are parsed every few seconds by the dag processor, so this module imports only ``airflow.sdk`` and
the standard library at top level; anything heavier is imported inside the function that needs it.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import BaseNotifier, Param

from postergenre.airflow_pools import GPU_POOL
from postergenre.genres import CNN_MODEL

__all__ = [
    "GPU_POOL",
    "PostergenreNotifier",
    "check_retrain_params",
    "run_params",
    "run_settings_from_params",
    "default_args",
    "drift_summary",
    "newest_snapshot_id",
    "resolve_snapshot_id",
    "retrain_trigger",
    "run_actor",
    "select_targets",
    "snapshot_id_param",
    "source_param",
    "task_settings",
    "trial_label",
]

SOURCE_ENV = "POSTERGENRE_SOURCE_URL"
WEBHOOK_ENV = "POSTERGENRE_ALERT_WEBHOOK_URL"
CHAMPION_MODEL = CNN_MODEL
# Same rule as postergenre.snapshots.validate_snapshot_id, plus "" for "use the run's date".
SNAPSHOT_ID_PATTERN = r"^$|^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"



def default_args(
    *,
    retries: int = 2,
    retry_delay: timedelta = timedelta(minutes=1),
    max_retry_delay: timedelta = timedelta(minutes=30),
    execution_timeout: timedelta = timedelta(hours=1),
) -> dict[str, Any]:
    """Task defaults: transient failures (store, network) are retried with exponential backoff; a hung
    task is killed after ``execution_timeout`` instead of holding its slot forever."""
    return {
        "owner": "postergenre",
        "retries": retries,
        "retry_delay": retry_delay,
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": max_retry_delay,
        "execution_timeout": execution_timeout,
    }


class PostergenreNotifier(BaseNotifier):
    """Logs an alert and, when a webhook URL is configured, POSTs it as JSON (``{"text": ..., ...}``).

    The URL comes from ``webhook_url`` or the ``POSTERGENRE_ALERT_WEBHOOK_URL`` environment variable. A
    webhook that cannot be reached is logged, not raised: the alert is already in the task log and the drift
    report is stored, so failing (and retrying) the task would only repeat work.
    """

    template_fields = ("message",)

    def __init__(self, message: str, *, webhook_url: str | None = None, details: Mapping[str, Any] | None = None,
                 timeout: float = 10.0):
        super().__init__()
        self.message = message
        self.webhook_url = webhook_url
        self.details = dict(details or {})
        self.timeout = timeout

    def payload(self, context: Mapping[str, Any]) -> dict[str, Any]:
        ti = context.get("ti")
        return {
            "text": self.message,
            "dag_id": getattr(context.get("dag"), "dag_id", None),
            "run_id": context.get("run_id"),
            "task_id": getattr(ti, "task_id", None),
            "details": self.details,
        }

    def notify(self, context: Mapping[str, Any]) -> None:
        payload = self.payload(context)
        self.log.warning("postergenre alert: %s %s", self.message, json.dumps(self.details, sort_keys=True))
        url = self.webhook_url or os.environ.get(WEBHOOK_ENV, "")
        if not url:
            return
        request = urllib.request.Request(
            url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                response.read()
        except (urllib.error.URLError, OSError) as exc:
            self.log.error("alert webhook %s failed: %s", url, exc)


def source_param() -> Param:
    """The export to ingest; its default is read from ``POSTERGENRE_SOURCE_URL`` when the DAG is parsed."""
    return Param(
        os.environ.get(SOURCE_ENV, ""),
        type="string",
        title="Source export",
        description=(
            "Letterboxd-shaped export to ingest: a local folder, a .zip/.tar.gz archive or an "
            f"s3://bucket/prefix. Defaults to ${SOURCE_ENV} where the DAG is parsed; the run fails if empty."
        ),
    )


def snapshot_id_param() -> Param:
    return Param(
        "",
        type="string",
        pattern=SNAPSHOT_ID_PATTERN,
        title="Snapshot id",
        description=(
            "Id to publish the snapshot under (letters, digits, '.', '_', '-'; at most 64). Leave empty to use "
            "the run's logical date as YYYY-MM-DD. Re-ingesting identical content under an id is a no-op."
        ),
    )


def resolve_snapshot_id(requested: str | None, context: Mapping[str, Any]) -> str:
    """The requested id, else the run's date: its logical date, or (manual Airflow 3 runs may have none)
    the time it was due to run."""
    if requested:
        return requested
    when: datetime | None = context.get("logical_date")
    if when is None:
        when = context["dag_run"].run_after
    return when.strftime("%Y-%m-%d")


def task_settings():
    """Fresh ``Settings`` from the task's environment (never the process-wide cached copy, which a
    long-lived worker or an in-process ``dag.test()`` could hold from another configuration)."""
    from postergenre.config import Settings

    return Settings()


def drift_summary(result: Mapping[str, Any], kind: str) -> dict[str, Any]:
    """The part of a drift result worth an XCom: severity, ids, distances and where the full report is."""
    summary: dict[str, Any] = {
        "kind": kind,
        "snapshot_id": result["snapshot_id"],
        "baseline_id": result.get("baseline_id"),
        "severity": result["severity"],
        "report_uri": result.get("report_uri"),
        "reasons": list(result.get("reasons", [])),
    }
    for view in ("raw", "collapsed"):
        if view in result:
            summary[view] = {"js_distance": result[view]["js_distance"], "psi": result[view]["psi"]}
    if "note" in result:
        summary["note"] = result["note"]
    return summary


# --------------------------------------------------------------------------------------------- retrain

RETRAIN_CRON_ENV = "POSTERGENRE_RETRAIN_CRON"
TUNING_ROUNDS = 4
"""``postergenre.tuning.MAX_ROUNDS``: the DAG wires one trial fan-out per possible Hyperband round."""
ALERT = "alert"


def run_params() -> dict[str, Param]:
    """One trigger-form Param per RunSettings field: type, bounds, choices, pattern and help all come from
    :class:`postergenre.run_settings.RunSettings`, as the CLI's options do."""
    from postergenre.run_settings import FORM_FIELDS, field_default, field_help, field_schema

    params = {}
    for name in FORM_FIELDS:
        schema = field_schema(name)
        schema.pop("default", None)
        schema.pop("description", None)
        title = name.replace("_", " ").capitalize()
        params[name] = Param(field_default(name), title=title, description=field_help(name), **schema)
    return params


def run_settings_from_params(params: Mapping[str, Any], snapshot_id: str):
    """The run's RunSettings from the trigger form; ValueError (one line) on what the model refuses, such as a
    backbone/weights pair the form's per-field checks cannot see."""
    from postergenre.run_settings import FORM_FIELDS, validate_run_settings

    return validate_run_settings({"snapshot_id": snapshot_id, **{k: params[k] for k in FORM_FIELDS if k in params}})


def check_retrain_params(params: Mapping[str, Any]) -> None:
    """Refuse, before any work, what the trigger form allows but the run cannot honour (ValueError)."""
    if params.get("force_promote") and not str(params.get("force_reason") or "").strip():
        raise ValueError("force_promote=true needs a force_reason: it is recorded in the registry's alias log")
    run_settings_from_params(params, snapshot_id="pending")


def retrain_trigger(run_type: str, events: Iterable[Any]) -> dict[str, Any] | None:
    """Whether a run should retrain, and on which snapshot: None means skip it.

    Time-triggered and manual runs always go on. A run triggered by snapshot events goes on only if some
    event's extra has drift severity ``alert``; it then trains on the newest alerting snapshot. ``events``
    are Airflow asset events (anything with ``extra`` and ``timestamp``).
    """
    events = list(events)
    if run_type != "asset_triggered" and not events:
        return {"trigger": run_type, "snapshot_id": None}
    alerts = [e for e in events if (e.extra or {}).get("severity") == ALERT]
    if not alerts:
        return None
    newest = max(alerts, key=lambda e: e.timestamp)
    return {"trigger": run_type, "snapshot_id": newest.extra.get("snapshot_id"), "severity": ALERT}


def trial_label(trial: Mapping[str, Any]) -> str:
    """What the UI shows for one mapped trial, e.g. ``t003 units=256 dropout`` (Hyperband adds the bracket,
    round and epoch budget: ``t012 units=64 no-dropout b0r1 3ep``)."""
    hp = trial.get("hp")
    if not hp:
        label = f"{trial['trial_id']} (hp from the previous round)"
    else:
        label = f"{trial['trial_id']} units={hp['units']} {'dropout' if hp['dropout'] else 'no-dropout'}"
    if "bracket" in trial:
        label += f" b{trial['bracket']}r{trial['round']} {trial['epochs']}ep"
    return label


def run_actor(dag_run: Any) -> str:
    """Who a promotion is attributed to: the user who triggered the run, else (scheduled runs) the run id."""
    return getattr(dag_run, "triggering_user_name", None) or dag_run.run_id


def select_targets(available: Sequence[str], ova_genres: Sequence[str]) -> list[str]:
    """What a run trains: ``genre-cnn`` always (the report is built around it), plus the requested one-vs-all
    genres, or every genre of the dataset when none is requested. Order follows ``available``."""
    missing = [g for g in ova_genres if g not in available]
    if missing:
        raise ValueError(f"genre(s) {', '.join(missing)} not in this snapshot's dataset")
    if not ova_genres:
        return list(available)
    return [t for t in available if t == CHAMPION_MODEL or t in ova_genres]


def newest_snapshot_id(settings) -> str | None:
    """The most recently ingested snapshot recorded in the metadata DB, or None when there is none."""
    from postergenre import db

    engine = db.make_engine(settings.db_url)
    try:
        db.upgrade(engine)
        with db.session_scope(engine) as session:
            newest = db.latest_snapshots(session, limit=1)
            return newest[0].id if newest else None
    finally:
        engine.dispose()

"""Nightly catalogue monitor: ingest the export as a snapshot, measure genre drift, publish an Asset event.

1. **ingest**: validate the export (Param ``source``) and publish it as snapshot ``snapshot_id`` (default:
   the run's date); idempotent, so a retry or a re-run of the same content changes nothing.
2. **drift_vs_previous**: genre drift against the previously ingested snapshot.
3. **drift_vs_champion**: genre drift against the snapshot the champion ``genre-cnn`` was trained on;
   skipped when there is no champion yet.
4. **publish**: one event on the ``postergenre://snapshots`` Asset whose extra carries the snapshot id, the
   worst drift severity and the report URIs, every night; a drift ``alert`` also publishes the same extra on
   ``postergenre://drift-alerts`` (what the retrain DAG schedules on) and fires the notifier (log, optional
   webhook).

A backfill refuses to ingest: the export is today's, and would be published under a past date.

Only small dicts and URIs travel through XCom; reports live in the store and the metadata DB.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime

from airflow.sdk import TriggerRule, dag, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from postergenre.assets import DRIFT_ALERTS, SNAPSHOTS_ASSET, publish_drift_alert
from postergenre.dag_support import (
    CHAMPION_MODEL,
    SOURCE_ENV,
    PostergenreNotifier,
    default_args,
    drift_summary,
    resolve_snapshot_id,
    snapshot_id_param,
    source_param,
    task_settings,
)
from postergenre.task_guards import refuse_backfill_ingest, run_step

SCHEDULE = os.environ.get("POSTERGENRE_MONITOR_CRON", "0 2 * * *")


@dag(
    dag_id="postergenre_monitor",
    schedule=SCHEDULE,
    start_date=datetime(2025, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(),
    params={"source": source_param(), "snapshot_id": snapshot_id_param()},
    tags=["postergenre", "monitoring"],
    doc_md=__doc__,
    on_failure_callback=PostergenreNotifier("postergenre_monitor run {{ run_id }} failed"),
)
def postergenre_monitor():
    @task
    def ingest() -> dict:
        """Publish the export as a snapshot and record it; returns the ingest summary (counts, ids)."""
        from postergenre.steps.ingest import ingest_snapshot

        context = get_current_context()
        source = context["params"]["source"]
        if not source:
            raise AirflowFailException(f"no source export: set ${SOURCE_ENV} or the run's 'source' param")
        refuse_backfill_ingest(context["dag_run"].run_type, context["params"]["snapshot_id"])
        snapshot_id = resolve_snapshot_id(context["params"]["snapshot_id"], context)
        return run_step(ingest_snapshot, source, snapshot_id=snapshot_id, settings=task_settings())

    @task
    def drift_vs_previous(ingested: dict) -> dict:
        from postergenre.steps.drift import compute_drift

        result = run_step(compute_drift, ingested["snapshot_id"], kind="previous", settings=task_settings())
        return drift_summary(result, "previous")

    @task
    def drift_vs_champion(ingested: dict) -> dict:
        """Drift against the champion's training snapshot (``lineage.snapshot_id`` of its version)."""
        from postergenre.registry import get_champion, show_version
        from postergenre.resources import registry_store
        from postergenre.steps.drift import compute_drift

        settings = task_settings()
        registry = registry_store(settings)
        champion = get_champion(registry, CHAMPION_MODEL)
        if champion is None:
            raise AirflowSkipException(f"no champion {CHAMPION_MODEL} yet: nothing to compare with")
        version = show_version(registry, CHAMPION_MODEL, champion["version"])
        baseline_id = version["lineage"].get("snapshot_id")
        if not baseline_id:
            raise AirflowSkipException(f"champion {champion['version']} records no training snapshot_id")
        result = run_step(
            compute_drift, ingested["snapshot_id"], baseline_id=baseline_id, kind="champion", settings=settings
        )
        return {**drift_summary(result, "champion"), "champion_version": champion["version"]}

    @task(outlets=[SNAPSHOTS_ASSET, DRIFT_ALERTS], trigger_rule=TriggerRule.NONE_FAILED)
    def publish(ingested: dict, previous: dict, champion: dict | None) -> dict:
        """Emit the snapshot's Asset event (extra = the returned dict); notify on a drift alert.

        ``champion`` is None when that comparison was skipped (Airflow then logs a harmless "XCom not found").
        """
        from postergenre.drift import severity_rank

        drifts = {d["kind"]: d for d in (previous, champion) if d}
        severity = max((d["severity"] for d in drifts.values()), key=severity_rank, default="ok")
        extra = {
            "snapshot_id": ingested["snapshot_id"],
            "severity": severity,
            "status": ingested["status"],
            "movies": ingested["movies"],
            "manifest_uri": ingested.get("manifest_uri"),
            "drift": {
                kind: {k: d.get(k) for k in ("severity", "baseline_id", "report_uri")} for kind, d in drifts.items()
            },
            "report_uris": [d["report_uri"] for d in drifts.values() if d.get("report_uri")],
        }
        context = get_current_context()
        context["outlet_events"][SNAPSHOTS_ASSET].extra = extra
        if publish_drift_alert(context["outlet_events"], extra):
            reasons = [r for d in drifts.values() for r in d.get("reasons", [])]
            PostergenreNotifier(
                f"genre drift ALERT on snapshot {extra['snapshot_id']}: " + "; ".join(reasons[:5]),
                details=extra,
            )(context)
        return extra

    ingested = ingest()
    previous = drift_vs_previous(ingested)
    champion = drift_vs_champion(ingested)
    previous >> champion  # one writer at a time on the (SQLite by default) metadata DB
    publish(ingested, previous, champion)


postergenre_monitor()

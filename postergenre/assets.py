"""The Airflow Assets the project publishes, for its own DAGs and for downstream ones (batch scoring, deploy).

- ``SNAPSHOTS_ASSET`` (``postergenre://snapshots``): one event per monitor run, whatever the drift.
- ``DRIFT_ALERT_ASSET`` (``postergenre://drift-alerts``): an event only when a snapshot's drift is ``alert``;
  the retrain DAG schedules on it (or its cron).
- ``CHAMPIONS_ASSET`` (``postergenre://champions``): an event each time a champion pointer moves.

Conditional events go through an ``AssetAlias``: a task adds the event to the alias only when there is one, so
nothing is published on a quiet night or a kept champion. Imports only ``airflow.sdk``.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Asset, AssetAlias

SNAPSHOTS_ASSET = Asset(
    name="postergenre_snapshots",
    uri="postergenre://snapshots",
    group="postergenre",
    extra={"description": "A validated catalogue snapshot; each event's extra names it and its drift."},
)
"""Event extra: ``snapshot_id``, ``severity`` (ok/warn/alert), ``drift`` (per kind: severity, baseline_id,
report_uri), ``report_uris``, ``manifest_uri``, ``status``, ``movies``."""

DRIFT_ALERT_ASSET = Asset(
    name="postergenre_drift_alerts",
    uri="postergenre://drift-alerts",
    group="postergenre",
    extra={"description": "A snapshot whose genre drift reached alert; the extra is the snapshot event's."},
)
DRIFT_ALERTS = AssetAlias(name="postergenre_drift_alert_events", group="postergenre")

CHAMPIONS_ASSET = Asset(
    name="postergenre_champions",
    uri="postergenre://champions",
    group="postergenre",
    extra={"description": "A champion pointer moved: model, version, previous version, decision URI."},
)
"""Event extra: ``model``, ``version``, ``previous_version``, ``decision_uri``, ``generation``, ``run_id``,
``forced``."""
CHAMPION_MOVES = AssetAlias(name="postergenre_champion_moves", group="postergenre")


def publish_drift_alert(outlet_events: Any, snapshot_extra: dict[str, Any]) -> bool:
    """Add a drift-alert event when the snapshot's severity is ``alert``; True when one was added."""
    if snapshot_extra.get("severity") != "alert":
        return False
    outlet_events[DRIFT_ALERTS].add(DRIFT_ALERT_ASSET, extra=dict(snapshot_extra))
    return True


def champion_event_extra(promoted: dict[str, Any], run_id: str) -> dict[str, Any]:
    """From ``promote_step``'s result."""
    return {
        "model": promoted["model"],
        "version": promoted["version"],
        "previous_version": promoted.get("previous_version"),
        "decision_uri": promoted.get("decision_uri"),
        "generation": promoted.get("generation"),
        "run_id": run_id,
        "forced": bool(promoted.get("forced")),
    }


def publish_champion_move(outlet_events: Any, promoted: dict[str, Any], run_id: str) -> bool:
    """Add a champion event when ``promote_step`` moved the pointer (not on a repeat); True when added."""
    if not (promoted.get("promoted") and promoted.get("changed")):
        return False
    outlet_events[CHAMPION_MOVES].add(CHAMPIONS_ASSET, extra=champion_event_extra(promoted, run_id))
    return True

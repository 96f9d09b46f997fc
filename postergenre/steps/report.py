"""Stage ``report``: the method report's Tables 1-4 for a run's models, as JSON and Markdown in ``runs/<id>/``."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np

from postergenre.config import Settings
from postergenre.evaluation import (
    choose_thresholds,
    f1_comparison_table,
    ova_ensemble_metrics,
    render_markdown,
)
from postergenre.genres import CNN_MODEL, model_name
from postergenre.labels import SPLITS
from postergenre.steps.context import load_npz, load_run
from postergenre.steps.train import FINE_TUNE
from postergenre.storage import NotFound


def report_step(run_id: str, settings: Settings | None = None) -> dict:
    """Tables 1-4 (CNN, OvA members, ensemble, F1 comparison), decisions and the fine-tune outcome."""
    ctx = load_run(run_id, settings)
    layout, classes = ctx.layout, ctx.classes
    cnn = ctx.store.get_json(layout.candidate(CNN_MODEL))
    report: dict = {"classes": classes, "cnn": {s: cnn["metrics"][s] for s in SPLITS}, "ova_members": {}}
    val_cols, test_cols, val_ids = [], [], None
    for genre in classes:
        name = model_name(genre)
        try:
            member = ctx.store.get_json(layout.candidate(name))
        except NotFound:
            continue
        report["ova_members"][genre] = member["metrics"]["test"]
        preds = load_npz(ctx.store, layout.candidate(name, "predictions.npz"))
        val_ids, test_ids = preds["val_ids"], preds["test_ids"]
        val_cols.append(preds["val"][:, 0])
        test_cols.append(preds["test"][:, 0])
    if len(test_cols) == len(classes):
        genre_of = ctx.labels.set_index("movie_id")["genre"]
        y_val = np.array([classes.index(str(genre_of[i])) for i in val_ids])
        y_test = np.array([classes.index(str(genre_of[i])) for i in test_ids])
        thresholds = choose_thresholds(y_val, np.stack(val_cols, 1), classes)
        report["ova"] = ova_ensemble_metrics(y_test, np.stack(test_cols, 1), classes, thresholds)
        report["f1_comparison"] = f1_comparison_table(report["cnn"]["test"], report["ova"], classes)
    decisions = {}
    for key in ctx.store.list_keys(layout.decisions_prefix):
        decision = ctx.store.get_json(key)
        decisions[decision["model"]] = {"promote": decision["promote"], "reason": decision["reason"]}
    report["decisions"] = decisions
    try:
        tuned = ctx.store.get_json(layout.candidate(CNN_MODEL, FINE_TUNE))
        report["fine_tune"] = {k: v for k, v in tuned.items() if k != "history"}
    except NotFound:
        pass
    report["generated_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    ctx.store.put_json(layout.report_json, report)
    ctx.store.put_bytes(layout.report_md, render_markdown(report).encode())
    summary = {
        "run_id": ctx.run_id,
        "cnn_test_macro_f1": report["cnn"]["test"]["macro_f1"],
        "cnn_test_accuracy": report["cnn"]["test"]["accuracy"],
        "chance": 1 / len(classes),
        "report_uri": ctx.url(layout.report_md),
        "decided": sorted(decisions),
        "promoted": sorted(m for m, d in decisions.items() if d["promote"]),
        "fine_tuned": bool(report.get("fine_tune", {}).get("fine_tuned")),
    }
    if "ova" in report:
        summary["ova_argmax_test_macro_f1"] = report["ova"]["argmax"]["macro_f1"]
        summary["ova_multilabel_test_macro_f1"] = report["ova"]["multilabel"]["macro_f1"]
    return summary

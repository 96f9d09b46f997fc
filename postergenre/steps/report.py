"""Stage ``report``: the method report's Tables 1-4 for a run's models, each beside its linear probe, plus the
OvA ensemble's calibrated argmax and its multi-label output scored on the movies' true genre lists; as JSON
and Markdown in ``runs/<id>/``."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd

from postergenre import multilabel
from postergenre.calibration import IDENTITY, Platt, calibrate_matrix, fit_joint_members
from postergenre.config import Settings
from postergenre.evaluation import (
    choose_thresholds,
    f1_comparison_table,
    multiclass_metrics,
    ova_ensemble_metrics,
    render_markdown,
)
from postergenre.genres import CNN_MODEL, model_name
from postergenre.labels import SPLITS
from postergenre.steps.context import RunContext, load_npz, load_run
from postergenre.steps.train import FINE_TUNE
from postergenre.storage import NotFound


def _members(ctx: RunContext) -> dict[str, tuple[dict, dict]]:
    """(candidate, predictions) of every trained OvA member, by genre in class order."""
    found = {}
    for genre in ctx.classes:
        name = model_name(genre)
        try:
            member = ctx.store.get_json(ctx.layout.candidate(name))
        except NotFound:
            continue
        found[genre] = (member, load_npz(ctx.store, ctx.layout.candidate(name, "predictions.npz")))
    return found


def ova_sections(ctx: RunContext, members: dict[str, tuple[dict, dict]]) -> dict:
    """Tables 3-4 of the ensemble (argmax as the report, calibrated argmax, thresholded multi-label against
    the collapsed label) and the multi-label output on the true genre lists."""
    classes = ctx.classes
    preds = [p for _, p in members.values()]
    val_ids, test_ids = preds[0]["val_ids"], preds[0]["test_ids"]
    genre_of = ctx.labels.set_index("movie_id")["genre"]
    y_val = np.array([classes.index(str(genre_of[i])) for i in val_ids])
    y_test = np.array([classes.index(str(genre_of[i])) for i in test_ids])
    val = np.stack([p["val"][:, 0] for p in preds], 1)
    test = np.stack([p["test"][:, 0] for p in preds], 1)
    sections = {"ova": ova_ensemble_metrics(y_test, test, classes, choose_thresholds(y_val, val, classes))}
    platts = [Platt.from_dict(m["metrics"]["calibration"]) if "calibration" in m["metrics"] else IDENTITY
              for m, _ in members.values()]
    calibrated = calibrate_matrix(test, platts)
    sections["ova"]["argmax_calibrated"] = multiclass_metrics(y_test, calibrated, classes)
    # What serving does for members of one run: vector scaling of all members jointly on the val rows.
    joint = fit_joint_members({g: (val_ids, val[:, j], (y_val == j).astype(int)) for j, g in enumerate(members)})
    if joint is not None:
        vector_scaled = calibrate_matrix(test, [joint[g] for g in members])
        sections["ova"]["argmax_vector_scaling"] = multiclass_metrics(y_test, vector_scaled, classes)
    sections["ova"]["members"] = members_trained_on(members)
    if all("multilabel_threshold" in m["metrics"] for m, _ in members.values()):
        sections["ova_truth"] = multilabel_on_truth(ctx, members)
    return sections


def members_trained_on(members: dict[str, tuple[dict, dict]]) -> dict:
    """What the OvA members were trained on, from their candidates (members trained before bags: one set each)."""
    training = [m.get("training", {}) for m, _ in members.values()]
    bags = sorted({t.get("bags", 1) for t in training})
    sets = next((t["sets"] for t in training if "sets" in t), "the report's 70/30 OvA set, one draw")
    smoothing = sorted({t.get("hp", {}).get("label_smoothing", 0.0) for t in training})
    return {"bags": bags, "sets": sets, "label_smoothing": smoothing}


def multilabel_on_truth(ctx: RunContext, members: dict[str, tuple[dict, dict]]) -> dict:
    """Each member's genre predicted where its score passes its val-chosen threshold, scored against the true
    genre lists of the multi-label evaluation set (test split + movies in no split), and on the test split
    alone (the part every balance option shares)."""
    first = next(iter(members.values()))[1]
    ids = np.concatenate([first["test_ids"], first.get("unused_ids", np.zeros(0, np.int64))])
    scores = np.stack(
        [np.concatenate([p["test"][:, 0], p.get("unused", np.zeros((0, 1)))[:, 0]]) for _, p in members.values()], 1
    )
    thresholds = {g: m["metrics"]["multilabel_threshold"] for g, (m, _) in members.items()}
    truth = ctx.multilabel
    rows = pd.Index(truth.test["movie_id"].to_numpy()).get_indexer(ids)
    if (rows < 0).any():
        raise RuntimeError("scored movies outside the multi-label evaluation set")
    columns = [truth.classes.index(g) for g in members]
    y_true = truth.y_test[rows][:, columns]
    y_pred = multilabel.apply_thresholds(scores, thresholds, list(members))
    in_test_split = (truth.test["source"].to_numpy()[rows] == "test")
    genres = list(members)
    return {
        "all": {"set": "test split + movies in no split",
                **multilabel.multilabel_scores(y_true, y_pred, genres)},
        "test_split": {"set": "test split",
                       **multilabel.multilabel_scores(y_true[in_test_split], y_pred[in_test_split], genres)},
        "thresholds": thresholds,
        "movies": {"test_split": int(in_test_split.sum()), "unused": int((~in_test_split).sum())},
    }


def probe_table(margins: dict) -> list[dict]:
    """One flat row per model: head and probe test macro-F1, the margin and its CI (for the report and UI)."""
    rows = []
    for model, margin in sorted(margins.items()):
        if margin:
            boot = margin["bootstrap"]
            rows.append({"model": model, "head_macro_f1": margin["head_macro_f1"], "probe_macro_f1": margin["macro_f1"],
                         "margin": boot["delta"], "ci_low": boot["ci_low"], "ci_high": boot["ci_high"],
                         "below_with_confidence": margin["below_with_confidence"]})
    return rows


def _fmt(value) -> str:
    return "" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def probe_markdown(report: dict) -> str:
    """The sections render_markdown does not know: probes, margins, calibrated argmax, truth multi-label."""
    lines = ["", "## Keras heads against their linear probes", "",
             f"Balance: {report.get('balance', 'undersample')}. Probe: logistic regression on the standardised "
             "cached features, C chosen on val. Margin: head - probe macro-F1 on the same test rows, with its "
             "95% paired-bootstrap CI.", "",
             "| model | head test macro-F1 | probe test macro-F1 | margin | 95% CI |", "| --- | --- | --- | --- | --- |"]
    for row in report.get("probe_table", []):
        lines.append(f"| {row['model']} | {_fmt(row['head_macro_f1'])} | {_fmt(row['probe_macro_f1'])} | "
                     f"{row['margin']:+.4f} | [{row['ci_low']:+.4f}, {row['ci_high']:+.4f}] |")
    ova = report.get("ova") or {}
    if "argmax_calibrated" in ova:
        lines += ["", "## OvA ensemble as argmax, members calibrated on val (Platt)", "",
                  f"macro-F1 {ova['argmax_calibrated']['macro_f1']:.4f} (uncalibrated {ova['argmax']['macro_f1']:.4f})"]
        if "argmax_vector_scaling" in ova:
            lines += ["", f"Vector scaling (all members' calibrations fitted jointly on val; what serving applies to "
                          f"members of one run): macro-F1 {ova['argmax_vector_scaling']['macro_f1']:.4f}"]
        if "members" in ova:
            m = ova["members"]
            lines += ["", f"Members: {'/'.join(map(str, m['bags']))} head(s) each, {m['sets']}; label smoothing "
                          f"{'/'.join(map(str, m['label_smoothing']))}."]
    truth = report.get("ova_truth")
    if truth:
        lines += ["", "## OvA multi-label output on the movies' true genre lists", "",
                  "| set | movies | micro-F1 | macro-F1 | subset accuracy | labels per poster (true / predicted) |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for part in ("all", "test_split"):
            s = truth[part]
            lines.append(f"| {s['set']} | {s['n']} | {s['micro_f1']:.4f} | {s['macro_f1']:.4f} | "
                         f"{s['subset_accuracy']:.4f} | {s['mean_labels_true']:.2f} / {s['mean_labels_pred']:.2f} |")
    return "\n".join(lines) + "\n"


def report_step(run_id: str, settings: Settings | None = None) -> dict:
    """Tables 1-4, each model beside its probe, the decisions and the fine-tune outcome."""
    ctx = load_run(run_id, settings)
    layout, classes = ctx.layout, ctx.classes
    cnn = ctx.store.get_json(layout.candidate(CNN_MODEL))
    report: dict = {
        "classes": classes,
        "balance": ctx.config.balance,
        "cnn": {s: cnn["metrics"][s] for s in SPLITS},
        "cnn_probe": {s: cnn["metrics"]["probe"][s] for s in SPLITS} if "probe" in cnn["metrics"] else None,
        "ova_members": {},
        "ova_member_probes": {},
    }
    members = _members(ctx)
    for genre, (member, _) in members.items():
        report["ova_members"][genre] = member["metrics"]["test"]
        report["ova_member_probes"][genre] = member["metrics"].get("probe", {}).get("test")
    if len(members) == len(classes):
        report.update(ova_sections(ctx, members))
        report["f1_comparison"] = f1_comparison_table(report["cnn"]["test"], report["ova"], classes)
    decisions, margins = {}, {}
    for key in ctx.store.list_keys(layout.decisions_prefix):
        decision = ctx.store.get_json(key)
        decisions[decision["model"]] = {"promote": decision["promote"], "reason": decision["reason"]}
        probe = decision.get("probe")
        margins[decision["model"]] = probe and {**probe, "head_macro_f1": decision["challenger"]["macro_f1"]}
    report["decisions"], report["probe_margins"] = decisions, margins
    report["probe_table"] = probe_table(margins)
    try:
        tuned = ctx.store.get_json(layout.candidate(CNN_MODEL, FINE_TUNE))
        report["fine_tune"] = {k: v for k, v in tuned.items() if k != "history"}
    except NotFound:
        pass
    report["generated_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    ctx.store.put_json(layout.report_json, report)
    ctx.store.put_bytes(layout.report_md, (render_markdown(report) + probe_markdown(report)).encode())
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
    if report["cnn_probe"]:
        summary["cnn_probe_test_macro_f1"] = report["cnn_probe"]["test"]["macro_f1"]
    if "ova" in report:
        summary["ova_argmax_test_macro_f1"] = report["ova"]["argmax"]["macro_f1"]
        summary["ova_argmax_calibrated_test_macro_f1"] = report["ova"]["argmax_calibrated"]["macro_f1"]
        if "argmax_vector_scaling" in report["ova"]:
            summary["ova_argmax_vector_scaling_test_macro_f1"] = report["ova"]["argmax_vector_scaling"]["macro_f1"]
        summary["ova_multilabel_test_macro_f1"] = report["ova"]["multilabel"]["macro_f1"]
    if "ova_truth" in report:
        summary["ova_multilabel_truth_macro_f1"] = report["ova_truth"]["all"]["macro_f1"]
    return summary

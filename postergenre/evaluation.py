"""Model evaluation: Tables 1-4 of the method report (the champion-vs-challenger decision is ``decision.py``).

Everything here works on arrays of predicted probabilities or labels, never on models, so it stays pure
numpy and is cheap to test; TensorFlow is deliberately not imported. Every returned structure holds only
plain ``float``/``int``/``str``/``list``/``dict`` values and no NaN (undefined ratios such as the precision
of a never-predicted class are 0.0, as sklearn's ``zero_division=0``), so ``json.dumps(..., allow_nan=False)``
always works.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

# Keras' backend epsilon: both cross-entropies clip probabilities to [EPS, 1 - EPS] exactly like Keras does,
# so the losses here match what ``model.evaluate`` printed in the report.
EPS = 1e-7
# Bootstrap replicates are resampled in blocks so that 1000 x 20k indices (or 1000 x K^3 cell counts)
# never sit in memory at once.
_BOOTSTRAP_BLOCK_ELEMENTS = 4_000_000


# --------------------------------------------------------------------------------------------------------
# validation and counting helpers


def _labels(y: Any, n_classes: int, name: str) -> np.ndarray:
    arr = np.asarray(y)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.equal(np.mod(arr, 1), 0)):
            raise ValueError(f"{name} must hold integer class indices")
        arr = arr.astype(np.int64)
    if arr.min() < 0 or arr.max() >= n_classes:
        raise ValueError(f"{name} must lie in [0, {n_classes}), got [{arr.min()}, {arr.max()}]")
    return arr.astype(np.int64, copy=False)


def _proba_matrix(proba: Any, n: int, n_classes: int, name: str = "proba") -> np.ndarray:
    arr = np.asarray(proba, dtype=np.float64)
    if arr.shape != (n, n_classes):
        raise ValueError(f"{name} must have shape ({n}, {n_classes}), got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} holds non-finite values")
    return arr


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """Elementwise num/den with 0 where den == 0 (sklearn's zero_division=0)."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.zeros(np.broadcast(num, den).shape)
    np.divide(num, den, out=out, where=den != 0)
    return out


def _confusion(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Rows are true classes, columns predicted classes (sklearn's layout)."""
    return np.bincount(y_true * n_classes + y_pred, minlength=n_classes * n_classes).reshape(
        n_classes, n_classes
    )


def _prf(tp: np.ndarray, n_pred: np.ndarray, n_true: np.ndarray) -> tuple[np.ndarray, ...]:
    """Precision, recall and F1 from counts; works on any leading (e.g. replicate) axes.

    F1 is 2TP / (2TP + FP + FN) = 2TP / (n_pred + n_true), the form sklearn uses, which is defined (0) even
    when precision and recall are both 0.
    """
    return _safe_div(tp, n_pred), _safe_div(tp, n_true), _safe_div(2 * tp, n_pred + n_true)


def _per_class(cm: np.ndarray, classes: Sequence[str]) -> tuple[dict[str, dict[str, Any]], np.ndarray]:
    tp = np.diag(cm)
    n_true = cm.sum(axis=1)
    precision, recall, f1 = _prf(tp, cm.sum(axis=0), n_true)
    table = {
        genre: {
            "precision": float(precision[k]),
            "recall": float(recall[k]),
            "f1": float(f1[k]),
            "support": int(n_true[k]),
        }
        for k, genre in enumerate(classes)
    }
    return table, np.vstack([precision, recall, f1])


def _argmax_metrics(y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """Single-label metrics shared by the CNN and the OvA argmax: accuracy, P/R/F1, confusion."""
    cm = _confusion(y_true, y_pred, len(classes))
    per_class, prf = _per_class(cm, classes)
    return {
        "n": int(y_true.size),
        "accuracy": float(np.trace(cm) / y_true.size),
        "macro_precision": float(prf[0].mean()),
        "macro_recall": float(prf[1].mean()),
        "macro_f1": float(prf[2].mean()),
        "per_class": per_class,
        "confusion": cm.tolist(),
        "classes": list(classes),
    }


# --------------------------------------------------------------------------------------------------------
# Tables 1-4


def multiclass_metrics(y_true: Any, proba: Any, classes: Sequence[str]) -> dict[str, Any]:
    """One Table 1 column (one split) plus the Table 2 per-class block for a softmax classifier.

    ``loss`` is Keras' categorical cross-entropy: rows renormalised to sum to 1, clipped to [1e-7, 1 - 1e-7],
    mean of -log p(true class).

    ``recall`` reproduces what the report's Table 1 calls recall: Keras' ``Recall()`` metric applied to
    one-hot targets and softmax outputs with its default threshold 0.5. Each row has exactly one positive
    target, so it equals the fraction of rows whose true-class probability exceeds 0.5. With 19 classes a
    softmax rarely puts more than half its mass on any class, hence the report's 0.06 next to an accuracy of
    0.25. The conventional (macro) recall, i.e. balanced accuracy, is ``macro_recall``.
    """
    k = len(classes)
    y = _labels(y_true, k, "y_true")
    p = _proba_matrix(proba, y.size, k)
    sums = p.sum(axis=1, keepdims=True)
    p_norm = _safe_div(p, sums)
    p_true = p_norm[np.arange(y.size), y]
    out = _argmax_metrics(y, np.argmax(p, axis=1), classes)
    out["loss"] = float(np.mean(-np.log(np.clip(p_true, EPS, 1 - EPS))))
    out["recall"] = float(np.mean(p[np.arange(y.size), y] > 0.5))
    return out


def binary_metrics(y_true_bin: Any, p: Any, threshold: float = 0.5) -> dict[str, Any]:
    """One Table 3 row for an OvA member: Keras-style BCE loss, accuracy, recall, precision, F1.

    A probability counts as positive when ``p > threshold`` (Keras' ``BinaryAccuracy``/``Recall`` rule).
    """
    y = _labels(y_true_bin, 2, "y_true_bin")
    s = np.asarray(p, dtype=np.float64)
    if s.shape != y.shape or not np.all(np.isfinite(s)):
        raise ValueError(f"p must be finite with shape {y.shape}, got {s.shape}")
    pc = np.clip(s, EPS, 1 - EPS)
    loss = -np.mean(y * np.log(pc) + (1 - y) * np.log(1 - pc))
    pred = s > threshold
    tp = int(np.sum(pred & (y == 1)))
    precision, recall, f1 = _prf(np.array(tp), np.array(pred.sum()), np.array((y == 1).sum()))
    return {
        "n": int(y.size),
        "support": int((y == 1).sum()),
        "threshold": float(threshold),
        "loss": float(loss),
        "accuracy": float(np.mean(pred == (y == 1))),
        "recall": float(recall),
        "precision": float(precision),
        "f1": float(f1),
    }


def _best_threshold(is_pos: np.ndarray, scores: np.ndarray) -> float:
    """The threshold t maximising F1 of ``scores > t``; 0.5 if the class has no positives.

    Candidates are midpoints between consecutive distinct scores (plus one below the minimum), so the
    choice does not hinge on ``>`` vs ``>=`` at a validation score. Ties go to the candidate nearest 0.5,
    the untuned default, which keeps thresholds stable between retrains.
    """
    n_pos = int(is_pos.sum())
    if n_pos == 0:
        return 0.5
    order = np.argsort(-scores, kind="stable")
    s_sorted = scores[order]
    tp_cum = np.cumsum(is_pos[order])
    # last index of each run of equal scores: predicting the top j+1 rows = threshold just below s_sorted[j]
    ends = np.flatnonzero(np.r_[s_sorted[1:] != s_sorted[:-1], True])
    tp = tp_cum[ends]
    n_pred = ends + 1
    f1 = 2 * tp / (n_pred + n_pos)
    upper = s_sorted[ends]
    lower = np.r_[s_sorted[ends[:-1] + 1], upper[-1] - 1.0]  # next distinct score down
    mid = (upper + lower) / 2
    candidates = np.where(mid < upper, mid, lower)  # adjacent floats: ``> lower`` is still exact
    if upper[-1] > 0:  # "everything positive": keep the threshold a probability
        candidates[-1] = upper[-1] / 2
    best = np.flatnonzero(f1 >= f1.max() - 1e-12)
    return float(candidates[best[np.argmin(np.abs(candidates[best] - 0.5))]])


def choose_thresholds(y_true: Any, ova_proba_val: Any, classes: Sequence[str]) -> dict[str, float]:
    """Per genre, the sigmoid threshold that maximises that member's F1 on the validation split.

    Tune on validation only; applying these to the test split in :func:`ova_ensemble_metrics` then gives an
    honest multi-label estimate.
    """
    k = len(classes)
    y = _labels(y_true, k, "y_true")
    p = _proba_matrix(ova_proba_val, y.size, k, "ova_proba_val")
    return {genre: _best_threshold(y == j, p[:, j]) for j, genre in enumerate(classes)}


def ova_ensemble_metrics(
    y_true: Any, ova_proba: Any, classes: Sequence[str], thresholds: Mapping[str, float]
) -> dict[str, Any]:
    """The OvA ensemble used both ways the report describes (section 3.2).

    ``argmax``: single-label prediction, the same metrics as :func:`multiclass_metrics` (minus loss and the
    Keras recall, which assume a softmax). ``multilabel``: genre j is predicted when its sigmoid exceeds
    ``thresholds[j]``, scored against the one-hot truth: micro/macro F1, per-genre P/R/F1, subset accuracy
    (whole label set exactly right), mean number of labels per poster and the share of posters given none.
    """
    k = len(classes)
    y = _labels(y_true, k, "y_true")
    p = _proba_matrix(ova_proba, y.size, k, "ova_proba")
    missing = [g for g in classes if g not in thresholds]
    if missing:
        raise ValueError(f"thresholds missing for {missing}")
    thr = np.array([float(thresholds[g]) for g in classes])

    truth = np.zeros((y.size, k), dtype=bool)
    truth[np.arange(y.size), y] = True
    pred = p > thr
    tp = (pred & truth).sum(axis=0)
    n_pred = pred.sum(axis=0)
    n_true = truth.sum(axis=0)
    precision, recall, f1 = _prf(tp, n_pred, n_true)
    n_labels = pred.sum(axis=1)
    multilabel = {
        "micro_f1": float(_safe_div(2 * tp.sum(), n_pred.sum() + n_true.sum())),
        "macro_f1": float(f1.mean()),
        "subset_accuracy": float(np.mean(np.all(pred == truth, axis=1))),
        "mean_labels_per_poster": float(n_labels.mean()),
        "no_label_rate": float(np.mean(n_labels == 0)),
        "thresholds": {g: float(t) for g, t in zip(classes, thr, strict=True)},
        "per_class": {
            g: {"precision": float(precision[j]), "recall": float(recall[j]), "f1": float(f1[j])}
            for j, g in enumerate(classes)
        },
    }
    return {"argmax": _argmax_metrics(y, np.argmax(p, axis=1), classes), "multilabel": multilabel}


def f1_comparison_table(
    cnn_metrics: Mapping[str, Any], ova_metrics: Mapping[str, Any], classes: Sequence[str]
) -> list[dict[str, Any]]:
    """Table 4: per-genre F1 of the OvA (argmax, as in the report) and the single CNN on the same test set.

    ``f1_ova_threshold`` adds the multi-label F1 of the same OvA so both uses can be compared.
    """
    return [
        {
            "genre": g,
            "f1_ova": ova_metrics["argmax"]["per_class"][g]["f1"],
            "f1_ova_threshold": ova_metrics["multilabel"]["per_class"][g]["f1"],
            "f1_cnn": cnn_metrics["per_class"][g]["f1"],
        }
        for g in classes
    ]


def _md_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    def cell(v: Any) -> str:
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return lines


def render_markdown(report: Mapping[str, Any]) -> str:
    """Tables 1-4 as Markdown. Sections whose inputs are absent are skipped.

    Report schema (every value is what the functions above return)::

        {"classes": [K genre names],
         "cnn": {"train": multiclass_metrics, "val": ..., "test": ...},   # Table 1; Table 2 uses "test"
         "ova_members": {genre: binary_metrics},                          # Table 3 (test split)
         "ova": ova_ensemble_metrics,                                     # Table 4 with cnn["test"]
         "fine_tune": fine-tune outcome (optional)}
    """
    classes = list(report["classes"])
    cnn = report.get("cnn") or {}
    out: list[str] = []
    if cnn:
        splits = list(cnn)
        rows = [
            ["Loss", *(cnn[s]["loss"] for s in splits)],
            ["Accuracy", *(cnn[s]["accuracy"] for s in splits)],
            ["Recall (Keras, p>0.5)", *(cnn[s]["recall"] for s in splits)],
            ["Macro recall", *(cnn[s]["macro_recall"] for s in splits)],
            ["Macro F1", *(cnn[s]["macro_f1"] for s in splits)],
        ]
        out += ["## Table 1: single CNN over the splits", "", *_md_table(["Metric", *splits], rows), ""]
    if "test" in cnn:
        pc = cnn["test"]["per_class"]
        rows = [[g, pc[g]["precision"], pc[g]["recall"], pc[g]["f1"], pc[g]["support"]] for g in classes]
        out += ["## Table 2: single CNN per class (test)", ""]
        out += [*_md_table(["Genre", "Precision", "Recall", "F1", "Support"], rows), ""]
    members = report.get("ova_members") or {}
    if members:
        keys = ["loss", "accuracy", "recall", "precision", "f1"]
        rows = [[g, *(members[g][m] for m in keys)] for g in classes if g in members]
        out += ["## Table 3: OvA binary members (test)", ""]
        out += [*_md_table(["Genre", "Loss", "Accuracy", "Recall", "Precision", "F1"], rows), ""]
    ova = report.get("ova")
    if ova and "test" in cnn:
        table = f1_comparison_table(cnn["test"], ova, classes)
        rows = [[r["genre"], r["f1_ova"], r["f1_ova_threshold"], r["f1_cnn"]] for r in table]
        rows.append(
            ["**Macro**", ova["argmax"]["macro_f1"], ova["multilabel"]["macro_f1"], cnn["test"]["macro_f1"]]
        )
        ml = ova["multilabel"]
        out += ["## Table 4: F1, OvA vs single CNN (test)", ""]
        out += _md_table(["Genre", "F1 (OvA, argmax)", "F1 (OvA, thresholds)", "F1 (CNN)"], rows)
        out += [
            "",
            f"OvA multi-label: micro-F1 {ml['micro_f1']:.3f}, subset accuracy {ml['subset_accuracy']:.3f}, "
            f"{ml['mean_labels_per_poster']:.2f} labels per poster, {ml['no_label_rate']:.1%} with none.",
            "",
        ]
    tuned = report.get("fine_tune")
    if tuned:
        verdict = "kept: genre-cnn above is the fine-tuned model" if tuned["fine_tuned"] else "not kept"
        out += [
            "## Fine-tune stage (genre-cnn)",
            "",
            f"Top {tuned['top_blocks']} backbone block(s) unfrozen at learning rate {tuned['learning_rate']:g}: "
            f"validation cross-entropy {_before(tuned):.4f} -> {_after(tuned):.4f} after "
            f"{tuned['epochs_run']} epoch(s), {verdict}.",
            "",
        ]
    return "\n".join(out)


def _before(tuned: dict) -> float:  # fine-tune results stored before it picked by cross-entropy: their loss
    return tuned.get("val_cross_entropy_before", tuned["val_loss_before"])


def _after(tuned: dict) -> float:
    return tuned.get("val_cross_entropy", tuned["val_loss"])


# The champion-vs-challenger decision lives in ``decision.py``; these names still import from here.
_DECISION_NAMES = frozenset({"DecisionPolicy", "bootstrap_macro_f1", "decide", "paired_bootstrap_macro_f1"})


def __getattr__(name: str) -> Any:
    if name in _DECISION_NAMES:  # imported on first use: decision.py imports this module's helpers
        from postergenre import decision

        return getattr(decision, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

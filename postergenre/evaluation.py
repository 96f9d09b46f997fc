"""Model evaluation (Tables 1-4 of the method report) and the champion-vs-challenger decision.

Everything here works on arrays of predicted probabilities or labels, never on models, so it stays pure
numpy and is cheap to test; TensorFlow is deliberately not imported. Every returned structure holds only
plain ``float``/``int``/``str``/``list``/``dict`` values and no NaN (undefined ratios such as the precision
of a never-predicted class are 0.0, as sklearn's ``zero_division=0``), so ``json.dumps(..., allow_nan=False)``
always works.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
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
            f"validation loss {tuned['val_loss_before']:.4f} -> {tuned['val_loss']:.4f} after "
            f"{tuned['epochs_run']} epoch(s), {verdict}.",
            "",
        ]
    return "\n".join(out)


# --------------------------------------------------------------------------------------------------------
# champion vs challenger


@dataclass(frozen=True)
class DecisionPolicy:
    """When a freshly trained model replaces the serving one.

    ``min_macro_f1_over_chance``: with no champion, the challenger must reach this multiple of chance
    macro-F1, taken as 1/K (a uniformly random guess on balanced classes). For a binary OvA member (K=2)
    that floor is 0.5 * 1.5 = 0.75, which the report's members would not reach; pass a lower factor there.
    ``min_improvement``: the lower bound of the bootstrap CI of the macro-F1 gain must exceed this.
    ``max_class_f1_drop``: no class may lose more F1 than this, whatever the average says.
    ``require_probe_parity``: when the challenger's linear probe is given (``decide(pred_probe=...)``), refuse
    a challenger whose macro-F1 is below the probe's with confidence (the paired bootstrap CI of head minus
    probe lies entirely below 0): a head that loses to logistic regression on its own input features has
    memorised rather than learnt. The margin is recorded either way.
    """

    min_macro_f1_over_chance: float = 1.5
    min_improvement: float = 0.0
    confidence: float = 0.95
    n_bootstrap: int = 1000
    max_class_f1_drop: float = 0.05
    seed: int = 0
    require_probe_parity: bool = True


def _macro_f1(cm: np.ndarray) -> np.ndarray:
    """Macro-F1 of each (K, K) confusion matrix stacked along the leading axes."""
    tp = np.diagonal(cm, axis1=-2, axis2=-1)
    return _safe_div(2 * tp, cm.sum(axis=-1) + cm.sum(axis=-2)).mean(axis=-1)


def _paired_replicates(joint: np.ndarray, idx: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Macro-F1 of challenger and champion for each row of ``idx`` (B, n), from one gather + one bincount.

    ``joint`` = (true * K + challenger) * K + champion per row, so a single count over (replicate, joint
    cell) yields both models' confusion matrices on exactly the same resampled rows.
    """
    b = idx.shape[0]
    cells = joint[idx]
    cells += (np.arange(b, dtype=cells.dtype) * k**3)[:, None]
    counts = np.bincount(cells.ravel(), minlength=b * k**3).reshape(b, k, k, k)
    return _macro_f1(counts.sum(axis=3)), _macro_f1(counts.sum(axis=2))


def paired_bootstrap_macro_f1(
    y_true: Any,
    pred_challenger: Any,
    pred_champion: Any,
    n_classes: int,
    n_bootstrap: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, float | int]:
    """Percentile bootstrap of macro-F1(challenger) - macro-F1(champion) on one test set.

    Paired: every replicate resamples the same row indices for both models, so the shared difficulty of
    the rows cancels and the interval is much tighter than two independent intervals would suggest.
    Vectorised: each block of replicates is one index matrix (blocks bound memory to a few million
    indices); per-replicate confusion counts come from one ``np.bincount`` over (replicate, true,
    challenger, champion) cell codes, so there is no Python loop over replicates or sklearn calls.
    ``p_better`` is the share of replicates where the challenger is strictly better.
    """
    if n_bootstrap < 1 or not 0 < confidence < 1:
        raise ValueError("need n_bootstrap >= 1 and 0 < confidence < 1")
    y = _labels(y_true, n_classes, "y_true")
    a = _labels(pred_challenger, n_classes, "pred_challenger")
    c = _labels(pred_champion, n_classes, "pred_champion")
    if not y.shape == a.shape == c.shape:
        raise ValueError(f"length mismatch: y_true {y.shape}, challenger {a.shape}, champion {c.shape}")
    n, k = y.size, n_classes
    joint = ((y * k + a) * k + c).astype(np.int64)
    chal, champ = _paired_replicates(joint, np.arange(n)[None, :], k)
    rng = np.random.default_rng(seed)
    block = max(1, min(_BOOTSTRAP_BLOCK_ELEMENTS // n, _BOOTSTRAP_BLOCK_ELEMENTS // k**3))
    deltas = np.empty(n_bootstrap)
    for start in range(0, n_bootstrap, block):
        stop = min(start + block, n_bootstrap)
        reps_a, reps_c = _paired_replicates(joint, rng.integers(0, n, size=(stop - start, n)), k)
        deltas[start:stop] = reps_a - reps_c
    alpha = (1 - confidence) / 2
    low, high = np.quantile(deltas, [alpha, 1 - alpha])
    return {
        "delta": float(chal[0] - champ[0]),
        "ci_low": float(low),
        "ci_high": float(high),
        "p_better": float(np.mean(deltas > 0)),
        "n_bootstrap": int(n_bootstrap),
        "confidence": float(confidence),
    }


def bootstrap_macro_f1(
    y_true: Any,
    pred: Any,
    n_classes: int,
    n_bootstrap: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, float | int]:
    """Percentile bootstrap CI of one model's macro-F1 on one test set (rows resampled with replacement).

    For comparing two models on the same rows use ``paired_bootstrap_macro_f1``: its interval of the
    difference is much tighter than two of these side by side suggest.
    """
    if n_bootstrap < 1 or not 0 < confidence < 1:
        raise ValueError("need n_bootstrap >= 1 and 0 < confidence < 1")
    y = _labels(y_true, n_classes, "y_true")
    a = _labels(pred, n_classes, "pred")
    if y.shape != a.shape:
        raise ValueError(f"length mismatch: y_true {y.shape}, pred {a.shape}")
    n, k = y.size, n_classes
    joint = (y * k + a).astype(np.int64)
    rng = np.random.default_rng(seed)
    block = max(1, min(_BOOTSTRAP_BLOCK_ELEMENTS // n, _BOOTSTRAP_BLOCK_ELEMENTS // k**2))
    scores = np.empty(n_bootstrap)
    for start in range(0, n_bootstrap, block):
        b = min(start + block, n_bootstrap) - start
        cells = joint[rng.integers(0, n, size=(b, n))] + (np.arange(b, dtype=np.int64) * k**2)[:, None]
        scores[start : start + b] = _macro_f1(np.bincount(cells.ravel(), minlength=b * k**2).reshape(b, k, k))
    alpha = (1 - confidence) / 2
    low, high = np.quantile(scores, [alpha, 1 - alpha])
    return {
        "macro_f1": float(_macro_f1(_confusion(y, a, k))),
        "ci_low": float(low),
        "ci_high": float(high),
        "n_bootstrap": int(n_bootstrap),
        "confidence": float(confidence),
    }


def _summary(y: np.ndarray, pred: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    m = _argmax_metrics(y, pred, classes)
    return {
        "macro_f1": m["macro_f1"],
        "accuracy": m["accuracy"],
        "per_class_f1": {g: v["f1"] for g, v in m["per_class"].items()},
    }


def _check(name: str, passed: bool, value: float, threshold: float) -> dict[str, Any]:
    return {"name": name, "passed": bool(passed), "value": float(value), "threshold": float(threshold)}


def _probe_margin(
    y: np.ndarray, a: np.ndarray, pred_probe: Any, classes: Sequence[str], policy: DecisionPolicy
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The challenger's margin to its linear probe on the same rows, and the ``probe_parity`` check."""
    k = len(classes)
    p = _labels(pred_probe, k, "pred_probe")
    if p.shape != y.shape:
        raise ValueError(f"length mismatch: y_true {y.shape}, probe {p.shape}")
    boot = paired_bootstrap_macro_f1(y, a, p, k, policy.n_bootstrap, policy.seed, policy.confidence)
    below = boot["ci_high"] < 0  # the whole interval of head - probe is negative: worse with confidence
    passed = not (policy.require_probe_parity and below)
    probe = {
        **_summary(y, p, classes),
        "margin": boot["delta"],
        "bootstrap": boot,
        "below_with_confidence": bool(below),
        "required": bool(policy.require_probe_parity),
    }
    return probe, _check("probe_parity", passed, boot["ci_high"], 0.0)


def _probe_text(probe: dict[str, Any] | None, policy: DecisionPolicy) -> str:
    if probe is None:
        return ""
    boot = probe["bootstrap"]
    return (
        f"; margin to linear probe {boot['delta']:+.4f} (probe macro-F1 {probe['macro_f1']:.4f}, "
        f"{policy.confidence:.0%} CI [{boot['ci_low']:+.4f}, {boot['ci_high']:+.4f}])"
    )


def decide(
    y_true: Any,
    pred_challenger: Any,
    pred_champion: Any | None,
    classes: Sequence[str],
    policy: DecisionPolicy | None = None,
    *,
    pred_probe: Any | None = None,
) -> dict[str, Any]:
    """Promote the challenger or keep the champion, judged on the same test rows (predicted class indices).

    Like a TFX Evaluator "blessing" but stricter. With no champion, the challenger needs a value floor:
    macro-F1 >= (1/K) * ``min_macro_f1_over_chance``. With one, it must be better with confidence (the paired
    bootstrap CI's lower bound > ``min_improvement``) and must not buy that average by sacrificing a genre
    (no per-class F1 drop > ``max_class_f1_drop``). Binary OvA members use the same path with
    ``classes=["other", genre]`` and 0/1 predictions, i.e. macro-F1 over both labels.

    ``pred_probe``: the predictions of the challenger's linear probe (``probe.fit_probe`` on the same cached
    features and split) on the same rows. The decision then records ``probe``: the probe's scores and the
    challenger's margin (macro-F1 head - probe) with its paired bootstrap CI, and, with
    ``policy.require_probe_parity``, the ``probe_parity`` check refuses a challenger below its probe with
    confidence (CI entirely below 0), in both paths. Without it, ``probe`` is None and nothing is checked.
    """
    policy = policy or DecisionPolicy()
    k = len(classes)
    if k < 2:
        raise ValueError("need at least two classes")
    y = _labels(y_true, k, "y_true")
    a = _labels(pred_challenger, k, "pred_challenger")
    if a.shape != y.shape:
        raise ValueError(f"length mismatch: y_true {y.shape}, challenger {a.shape}")
    challenger = _summary(y, a, classes)
    probe, probe_check = (
        (None, None) if pred_probe is None else _probe_margin(y, a, pred_probe, classes, policy)
    )
    probe_ok = probe_check is None or probe_check["passed"]
    probe_failure = (
        f"macro-F1 below its linear probe with confidence "
        f"(CI of head - probe [{probe['bootstrap']['ci_low']:+.4f}, {probe['bootstrap']['ci_high']:+.4f}] < 0)"
        if not probe_ok
        else ""
    )
    probe_checks = [] if probe_check is None else [probe_check]

    if pred_champion is None:
        floor = policy.min_macro_f1_over_chance / k
        floor_ok = challenger["macro_f1"] >= floor
        ok = floor_ok and probe_ok
        reason = (
            f"{'promoted' if ok else 'rejected'}: no champion; challenger macro-F1 "
            f"{challenger['macro_f1']:.4f} {'>=' if floor_ok else '<'} floor {floor:.4f} "
            f"({policy.min_macro_f1_over_chance:g} x chance 1/{k})"
            + ("" if probe_ok else f"; {probe_failure}")
            + _probe_text(probe, policy)
        )
        return {
            "promote": bool(ok),
            "reason": reason,
            "checks": [_check("macro_f1_floor", floor_ok, challenger["macro_f1"], floor), *probe_checks],
            "challenger": challenger,
            "champion": None,
            "bootstrap": None,
            "per_class_f1_change": None,
            "probe": probe,
        }

    c = _labels(pred_champion, k, "pred_champion")
    champion = _summary(y, c, classes)
    boot = paired_bootstrap_macro_f1(y, a, c, k, policy.n_bootstrap, policy.seed, policy.confidence)
    change = {g: challenger["per_class_f1"][g] - champion["per_class_f1"][g] for g in classes}
    worst = min(change, key=change.__getitem__)
    worst_drop = -change[worst]
    gain_ok = boot["ci_low"] > policy.min_improvement
    drop_ok = worst_drop <= policy.max_class_f1_drop
    checks = [
        _check("macro_f1_gain_ci_low", gain_ok, boot["ci_low"], policy.min_improvement),
        _check("max_class_f1_drop", drop_ok, worst_drop, policy.max_class_f1_drop),
        *probe_checks,
    ]
    promote = gain_ok and drop_ok and probe_ok
    pct = f"{policy.confidence:.0%}"
    summary = (
        f"macro-F1 {challenger['macro_f1']:.4f} vs champion {champion['macro_f1']:.4f} "
        f"(delta {boot['delta']:+.4f}, {pct} CI [{boot['ci_low']:+.4f}, {boot['ci_high']:+.4f}])"
    ) + _probe_text(probe, policy)
    if promote:
        reason = f"promoted: {summary}; largest genre drop {worst_drop:.4f} ({worst})"
    else:
        failed = []
        if not gain_ok:
            failed.append(f"CI lower bound {boot['ci_low']:+.4f} <= {policy.min_improvement:g}")
        if not drop_ok:
            failed.append(f"{worst} F1 dropped {worst_drop:.4f} > {policy.max_class_f1_drop:g}")
        if not probe_ok:
            failed.append(probe_failure)
        reason = f"kept champion: {'; '.join(failed)}; {summary}"
    return {
        "promote": bool(promote),
        "reason": reason,
        "checks": checks,
        "challenger": challenger,
        "champion": champion,
        "bootstrap": boot,
        "per_class_f1_change": change,
        "probe": probe,
    }

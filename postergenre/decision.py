"""The champion-vs-challenger decision: paired bootstrap of macro-F1, the policy, and ``decide``.

Split out of ``evaluation.py`` (which still re-exports these names) and, like it, pure numpy on predicted class
indices: no TensorFlow, JSON-able results without NaN. A decision also records the challenger's margin to its
own linear probe (``probe.py``) and, by default, refuses a head that is below its probe with confidence.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from postergenre.evaluation import (
    _BOOTSTRAP_BLOCK_ELEMENTS,
    _argmax_metrics,
    _confusion,
    _labels,
    _safe_div,
)


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

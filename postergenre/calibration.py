"""Platt scaling of one-vs-all members' scores, fitted on validation, so the ensemble's argmax is fair.

Each OvA member is its own sigmoid model trained on its own 70/30 set: one member's 0.8 is not another's 0.8
(some members are sharper, some train longer before early stopping), so the argmax across raw member scores
partly picks the most over-confident member rather than the likeliest genre. Platt scaling (Platt 1999;
the numerically safe Newton method of Lin, Lin & Weng 2007) maps a member's score ``s`` to
``sigmoid(a * logit(s) + b)`` with ``(a, b)`` fitted by maximum likelihood on validation labels, so every
calibrated column estimates the same thing, P(genre | poster) on the calibration set's class balance. Two floats
per member, stored with it; ``(1, 0)`` is the identity. Pure numpy: deterministic, no TensorFlow.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

_CLIP = 1e-7  # Keras' epsilon: the sigmoid outputs the members were trained with never reach 0 or 1 beyond it
_MAX_ITER = 100
_TOL = 1e-10


@dataclass(frozen=True)
class Platt:
    """``calibrated = sigmoid(a * logit(score) + b)``."""

    a: float = 1.0
    b: float = 0.0

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> Platt:
        return cls(float(doc["a"]), float(doc["b"]))


IDENTITY = Platt()


def _logit(scores: Any) -> np.ndarray:
    p = np.clip(np.asarray(scores, dtype=np.float64), _CLIP, 1 - _CLIP)
    return np.log(p) - np.log1p(-p)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1 / (1 + np.exp(-z[pos]))
    ez = np.exp(z[~pos])
    out[~pos] = ez / (1 + ez)
    return out


def _nll(z: np.ndarray, t: np.ndarray, w: np.ndarray, a: float, b: float) -> float:
    """Weighted cross-entropy of sigmoid(a z + b) against soft targets ``t`` (log1p forms: no overflow)."""
    f = a * z + b
    return float(np.sum(w * (np.logaddexp(0, f) - t * f)))


def fit_platt(scores: Any, labels: Any, *, sample_weight: Any | None = None) -> Platt:
    """Fit ``(a, b)`` on validation ``scores`` (a member's sigmoid outputs) and 0/1 ``labels``.

    Targets are Platt's smoothed ones, ``(N+ + 1) / (N+ + 2)`` and ``1 / (N- + 2)``, so perfectly separated
    validation scores still give a finite slope. Newton steps with backtracking (Lin, Lin & Weng 2007). With
    only one class present there is nothing to fit and the identity comes back.
    """
    z = _logit(scores).reshape(-1)
    y = np.asarray(labels).reshape(-1)
    if y.shape != z.shape or y.size == 0:
        raise ValueError(
            f"scores and labels must be non-empty and of one length, got {z.shape} and {y.shape}"
        )
    if not np.all(np.isin(y, (0, 1))):
        raise ValueError("labels must be 0/1")
    w = np.ones_like(z) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64).reshape(-1)
    pos = y == 1
    n_pos, n_neg = float(w[pos].sum()), float(w[~pos].sum())
    if n_pos == 0 or n_neg == 0:
        return IDENTITY
    t = np.where(pos, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
    a, b = 1.0, 0.0
    loss = _nll(z, t, w, a, b)
    for _ in range(_MAX_ITER):
        p = _sigmoid(a * z + b)
        g = w * (p - t)
        h = w * p * (1 - p) + 1e-12
        grad = np.array([np.dot(g, z), g.sum()])
        hess = np.array([[np.dot(h, z * z), np.dot(h, z)], [np.dot(h, z), h.sum()]])
        step = np.linalg.solve(hess + 1e-12 * np.eye(2), grad)
        scale = 1.0
        while scale > 1e-10:
            a_new, b_new = a - scale * step[0], b - scale * step[1]
            new_loss = _nll(z, t, w, a_new, b_new)
            if new_loss <= loss + 1e-4 * scale * float(np.dot(grad, -step)):
                break
            scale /= 2
        else:
            break  # no step lowers the loss: at the optimum up to rounding
        done = loss - new_loss < _TOL * max(1.0, abs(loss))
        a, b, loss = a_new, b_new, new_loss
        if done:
            break
    return Platt(float(a), float(b))


def apply_platt(scores: Any, platt: Platt) -> np.ndarray:
    """Calibrated probabilities of one member's scores (any shape)."""
    s = np.asarray(scores, dtype=np.float64)
    return _sigmoid(platt.a * _logit(s) + platt.b).reshape(s.shape)


def fit_members(scores: Any, y_true: Any) -> list[Platt]:
    """One ``Platt`` per column of a ``(n, K)`` member-score matrix, against class indices ``y_true``.

    Column ``j`` is fitted on "is genre j" over the same rows (e.g. the multi-class validation split), so every
    member is calibrated to the same class balance and the calibrated argmax compares like with like.
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(y_true).reshape(-1)
    if s.ndim != 2 or s.shape[0] != y.size:
        raise ValueError(f"scores must be (n, K) with n = len(y_true), got {s.shape} and {y.size}")
    return [fit_platt(s[:, j], (y == j).astype(int)) for j in range(s.shape[1])]


def calibrate_matrix(scores: Any, calibrations: Sequence[Platt]) -> np.ndarray:
    """Apply column ``j``'s calibration to column ``j`` of a ``(n, K)`` matrix of member scores."""
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2 or s.shape[1] != len(calibrations):
        raise ValueError(
            f"need one calibration per column: scores {s.shape}, {len(calibrations)} calibrations"
        )
    return np.column_stack([apply_platt(s[:, j], c) for j, c in enumerate(calibrations)])

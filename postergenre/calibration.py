"""Calibration of one-vs-all members' scores, fitted on validation, so the ensemble's argmax is fair.

Each OvA member is its own sigmoid model trained on its own 70/30 set: one member's 0.8 is not another's 0.8
(some members are sharper, some train longer before early stopping), so the argmax across raw member scores
partly picks the most over-confident member rather than the likeliest genre. Platt scaling (Platt 1999;
the numerically safe Newton method of Lin, Lin & Weng 2007) maps a member's score ``s`` to
``sigmoid(a * logit(s) + b)`` with ``(a, b)`` fitted by maximum likelihood on validation labels, so every
calibrated column estimates the same thing, P(genre | poster) on the calibration set's class balance. Two floats
per member, stored with it; ``(1, 0)`` is the identity. Pure numpy: deterministic, no TensorFlow.

Vector scaling (Guo et al. 2017, ``fit_vector_scaling``) fits the same ``(a, b)`` per member, but all members
jointly, by the multi-class cross-entropy of the softmax over the calibrated logits: the argmax's own question.
It needs every member's scores on the same validation movies, so it is fitted where the members meet: the run
report (``steps/report.py``) and serving (``serving.argmax_calibrations``, from each registered member's
``ARGMAX_VAL_FILE``; members of different runs fall back to their own Platt). On ``bench_quality``'s snapshot it
beat per-member Platt in 5-fold cross-validation on val (macro-F1 0.516 vs 0.512 and 0.516 vs 0.514).
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


# ---- vector scaling: the members' calibrations fitted jointly for the argmax -------------------------------

_VS_PENALTY = 1e-2
"""Ridge pull of every (a, b) towards the identity (1, 0), in units of one row's cross-entropy: negligible next to a
validation split's hundreds of rows, but it keeps the fit finite when a class is missing from it."""


def _vs_loss(params: np.ndarray, z: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[float, np.ndarray]:
    """Weighted softmax cross-entropy of ``a * z + b`` (per column) against class indices, with its gradient."""
    k = z.shape[1]
    a, b = params[:k], params[k:]
    u = z * a + b
    u_max = u.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(u - u_max).sum(axis=1)) + u_max[:, 0]
    rows = np.arange(len(y))
    loss = float(np.dot(w, log_norm - u[rows, y]))
    g = np.exp(u - log_norm[:, None])  # softmax
    g[rows, y] -= 1
    g *= w[:, None]
    grad = np.concatenate([(g * z).sum(axis=0), g.sum(axis=0)])
    loss += 0.5 * _VS_PENALTY * float(np.sum((a - 1) ** 2) + np.sum(b**2))
    grad += _VS_PENALTY * np.concatenate([a - 1, b])
    return loss, grad


def vector_scaling_nll(scores: Any, y_true: Any, calibrations: Sequence[Platt]) -> float:
    """Mean multi-class cross-entropy of ``softmax(a_j * logit(s_j) + b_j)`` over the columns, against ``y_true``."""
    z = _logit(scores)
    y = np.asarray(y_true).reshape(-1)
    a = np.array([c.a for c in calibrations])
    b = np.array([c.b for c in calibrations])
    u = z * a + b
    u_max = u.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(u - u_max).sum(axis=1)) + u_max[:, 0]
    return float(np.mean(log_norm - u[np.arange(len(y)), y]))


def fit_vector_scaling(scores: Any, y_true: Any, *, sample_weight: Any | None = None) -> list[Platt]:
    """Vector scaling (Guo et al. 2017) of one-vs-all members for their argmax: one ``Platt`` per column of a
    ``(n, K)`` member-score matrix, all fitted *jointly*.

    Member ``j``'s calibrated logit is ``u_j = a_j * logit(s_j) + b_j``, as Platt's; but instead of K independent
    binary fits, the 2K numbers minimise the multi-class cross-entropy of ``softmax(u)`` against the class indices
    ``y_true`` (e.g. the multi-class validation rows), which is the argmax's own question: which member's score
    should win. Each map is increasing (``a_j >= 0``), so every member keeps its ranking of the posters, and the
    argmax stays an argmax over members' scores. Stored and applied exactly like Platt's (``calibrate_matrix``):
    ``sigmoid(u_j)`` is monotone in ``u_j``, so the argmax of the calibrated columns is the argmax of ``u``;
    ``softmax(u)`` is the calibrated distribution over genres.

    The problem is convex (a cross-entropy of a linear map) and solved from the identity by L-BFGS with the exact
    gradient: deterministic. A tiny ridge towards the identity keeps it finite when a class has no row; the
    identity comes back whenever the fit does not lower the validation cross-entropy.
    """
    from scipy.optimize import minimize

    z = _logit(scores)
    y = np.asarray(y_true).reshape(-1)
    if z.ndim != 2 or z.shape[0] != y.size or y.size == 0:
        raise ValueError(f"scores must be (n, K) with n = len(y_true) > 0, got {z.shape} and {y.size}")
    k = z.shape[1]
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= k:
        raise ValueError(f"y_true must be class indices in [0, {k})")
    w = np.ones(y.size) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64).reshape(-1)
    start = np.concatenate([np.ones(k), np.zeros(k)])
    result = minimize(
        _vs_loss,
        start,
        args=(z, y, w),
        jac=True,
        method="L-BFGS-B",
        bounds=[(0.0, None)] * k + [(None, None)] * k,
        options={"maxiter": 1000, "ftol": 1e-12, "gtol": 1e-8},
    )
    identity = [IDENTITY] * k
    if not np.all(np.isfinite(result.x)) or result.fun >= _vs_loss(start, z, y, w)[0]:
        return identity
    return [Platt(float(a), float(b)) for a, b in zip(result.x[:k], result.x[k:], strict=True)]


def fit_joint_members(rows: Mapping[str, tuple[Any, Any, Any]]) -> dict[str, Platt] | None:
    """Vector scaling of named members from each one's validation rows ``(movie_ids, scores, is_genre)``.

    The joint fit needs every member's score on the same movies, so it is done only when all members carry the
    same validation movies (one run's members); otherwise, or with fewer than two members, None (the caller
    falls back to each member's own Platt calibration). Rows whose genre is none of the members' are left out:
    the argmax chooses among these members only.
    """
    genres = list(rows)
    if len(genres) < 2:
        return None
    ids = np.asarray(rows[genres[0]][0])
    if any(not np.array_equal(np.asarray(rows[g][0]), ids) for g in genres):
        return None
    scores = np.column_stack([np.asarray(rows[g][1], dtype=np.float64).reshape(-1) for g in genres])
    positive = np.column_stack([np.asarray(rows[g][2]).reshape(-1) == 1 for g in genres])
    if scores.shape[0] != ids.size or positive.shape[0] != ids.size:
        raise ValueError("each member needs one score and one 0/1 label per validation movie")
    keep = positive.sum(axis=1) == 1
    if not keep.any():
        return None
    fitted = fit_vector_scaling(scores[keep], positive[keep].argmax(axis=1))
    return dict(zip(genres, fitted, strict=True))


ARGMAX_VAL_FILE = "argmax_val.npz"
"""A registered member's validation rows for the joint fit: ``movie_ids``, ``scores``, ``is_genre``."""


def argmax_val_bytes(movie_ids: Any, scores: Any, is_genre: Any) -> bytes:
    import io

    buf = io.BytesIO()
    np.savez(
        buf,
        movie_ids=np.asarray(movie_ids, dtype=np.int64),
        scores=np.asarray(scores, dtype=np.float32).reshape(-1),
        is_genre=np.asarray(is_genre, dtype=np.int8).reshape(-1),
    )
    return buf.getvalue()


def read_argmax_val(data: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(movie_ids, scores, is_genre)`` of an ``ARGMAX_VAL_FILE``; ValueError if it is not one."""
    import io
    import zipfile

    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            ids, scores, is_genre = npz["movie_ids"], npz["scores"], npz["is_genre"]
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise ValueError(f"not an {ARGMAX_VAL_FILE} ({type(exc).__name__})") from None
    if not (ids.ndim == scores.ndim == is_genre.ndim == 1 and ids.size == scores.size == is_genre.size):
        raise ValueError(f"{ARGMAX_VAL_FILE} arrays differ in shape")
    return ids, scores, is_genre

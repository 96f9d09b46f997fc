"""Linear probe on cached backbone features: the baseline every trained head has to match.

A head that cannot beat logistic regression on its own input features has learnt nothing the features did not
already give linearly; on real posters the report's heads memorised their training set and lost to such a probe.
The probe is scikit-learn's ``LogisticRegression`` (multinomial for multi-class, one binary model for an OvA
member) on features standardised by a ``StandardScaler`` fitted on the training split only. Its inverse
regularisation ``C`` is picked from a fixed log-spaced grid by the validation score; the test split is only ever
predicted. lbfgs has no randomness, and every fit starts from zero (no warm start across the grid), so the same
inputs give the same probe, and a fit for one ``C`` does not depend on which other values were tried.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score, log_loss
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

C_GRID: tuple[float, ...] = tuple(float(c) for c in np.logspace(-4, 2, 13))
"""1e-4 .. 1e2 in half decades: from a near-constant model to almost no penalty on standardised features."""
CRITERIA = ("macro_f1", "log_loss")
MAX_ITER = 2000
SEED = 0


@dataclass
class LinearProbe:
    """A fitted probe: the train-split scaler and the logistic regression for one ``C``."""

    scaler: StandardScaler
    model: LogisticRegression
    n_outputs: int

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """``(n, K)`` class probabilities, or ``(n, 1)`` p(positive) for a 0/1 target: a head's output shape."""
        p = self.model.predict_proba(self.scaler.transform(np.asarray(x, dtype=np.float64)))
        full = np.zeros((len(p), max(self.n_outputs, 2)))
        full[:, self.model.classes_.astype(int)] = p  # a class absent from train keeps probability 0
        return full[:, 1:] if self.n_outputs == 1 else full


@dataclass
class ProbeResult:
    """What ``fit_probe`` returns; ``proba[split]`` is shaped like a head's output (see ``LinearProbe``)."""

    C: float
    val_score: float
    criterion: str
    val_scores: dict[float, float]
    proba: dict[str, np.ndarray] = field(default_factory=dict)
    probe: LinearProbe | None = None


def _n_outputs(y: np.ndarray) -> int:
    """Columns of a head's output for these targets: K for one-hot rows, 1 for a 0/1 column or vector."""
    y = np.asarray(y)
    return int(y.shape[1]) if y.ndim == 2 else 1


def _targets(y: np.ndarray) -> np.ndarray:
    """Class indices from one-hot rows, a 0/1 column or a 1-D label vector."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] > 1:
        return np.argmax(y, axis=1)
    return y.reshape(-1).astype(np.int64)


def fit_logistic(
    x_train: np.ndarray,
    y_train: np.ndarray,
    C: float,
    *,
    sample_weight: np.ndarray | None = None,
) -> LinearProbe:
    """Standardise on ``x_train`` and fit one logistic regression; only the training split is seen.

    ``y_train``: one-hot rows (multi-class), a 0/1 column or labels. Binary targets give one sigmoid model, more
    classes the multinomial one (scikit-learn's lbfgs default for >= 3 classes). ``sample_weight`` (e.g. the
    class weights of a ``weighted`` training set) weights the loss, not the standardisation.
    """
    y = _targets(y_train)
    scaler = StandardScaler().fit(np.asarray(x_train, dtype=np.float64))
    model = LogisticRegression(C=float(C), l1_ratio=0.0, solver="lbfgs", max_iter=MAX_ITER, random_state=SEED)
    # One BLAS thread: the products are small (rows x features x classes), and on a busy 2-core machine
    # OpenBLAS' threads made each fit ~10x slower than one thread (measured), never faster.
    with warnings.catch_warnings(), threadpool_limits(1):
        # The weakest penalties may stop at max_iter on separable training sets; that model is still the one
        # the grid scores on validation (and a large C rarely wins there).
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(scaler.transform(np.asarray(x_train, dtype=np.float64)), y, sample_weight=sample_weight)
    return LinearProbe(scaler, model, _n_outputs(y_train))


def val_score(
    probe: LinearProbe,
    x_val: np.ndarray,
    y_val: np.ndarray,
    criterion: str = "macro_f1",
    sample_weight: np.ndarray | None = None,
) -> float:
    """Higher is better: macro-F1 of the argmax (0.5 cut for binary) or minus the log-loss on validation."""
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {', '.join(CRITERIA)}, got {criterion!r}")
    y = _targets(y_val)
    p = probe.predict_proba(x_val)
    if p.shape[1] == 1:
        p = np.column_stack([1 - p[:, 0], p[:, 0]])
    labels = np.arange(p.shape[1])
    if criterion == "log_loss":
        return -float(log_loss(y, np.clip(p, 1e-15, 1), labels=labels, sample_weight=sample_weight))
    return float(f1_score(y, p.argmax(axis=1), labels=labels, average="macro", zero_division=0))


def select_c(scores: Mapping[float, float]) -> float:
    """The ``C`` with the best validation score; ties go to the smaller ``C`` (the stronger penalty)."""
    if not scores:
        raise ValueError("no validation scores to select from")
    return min(scores, key=lambda c: (-scores[c], c))


def fit_probe(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    *,
    predict: Mapping[str, np.ndarray] | None = None,
    c_grid: Sequence[float] = C_GRID,
    criterion: str = "macro_f1",
    sample_weight: np.ndarray | None = None,
    val_sample_weight: np.ndarray | None = None,
) -> ProbeResult:
    """Fit the probe for every ``C`` in ``c_grid`` on train, keep the one that scores best on val.

    ``predict`` maps split names to feature matrices whose probabilities are wanted (e.g. ``{"val": x_val,
    "test": x_test}``); they are predicted by the chosen probe only, so the test split never influences the
    choice. Returns the chosen ``C``, its validation score (``criterion``: ``"macro_f1"`` or ``"log_loss"``,
    reported as minus the loss so higher is better), every grid point's score and the probabilities.
    """
    if not c_grid:
        raise ValueError("c_grid is empty")
    fits, scores = {}, {}
    for c in c_grid:
        fits[float(c)] = fit_logistic(x_train, y_train, c, sample_weight=sample_weight)
        scores[float(c)] = val_score(fits[float(c)], x_val, y_val, criterion, val_sample_weight)
    best = select_c(scores)
    chosen = fits[best]
    proba = {name: chosen.predict_proba(x) for name, x in (predict or {}).items()}
    return ProbeResult(best, scores[best], criterion, scores, proba, chosen)

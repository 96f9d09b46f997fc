"""Platt scaling of OvA member scores: maximum likelihood on val, identity when calibrated, fair argmax."""

import json

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from postergenre.calibration import (
    IDENTITY,
    Platt,
    apply_platt,
    calibrate_matrix,
    fit_members,
    fit_platt,
)


def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


@pytest.fixture
def rng():
    return np.random.default_rng(3)


def test_fit_recovers_a_known_distortion(rng):
    """Labels drawn from sigmoid(2 z - 1) for member scores sigmoid(z): Platt finds a ~ 2, b ~ -1."""
    z = rng.normal(0, 1.5, 20000)
    y = (rng.random(z.size) < _sigmoid(2 * z - 1)).astype(int)
    platt = fit_platt(_sigmoid(z), y)
    assert platt.a == pytest.approx(2, abs=0.1) and platt.b == pytest.approx(-1, abs=0.1)
    # Matches scikit-learn's unpenalised logistic regression on logit(score) up to Platt's target smoothing.
    reference = LogisticRegression(C=np.inf).fit(z[:, None], y)
    assert platt.a == pytest.approx(reference.coef_[0, 0], abs=0.02)
    assert platt.b == pytest.approx(reference.intercept_[0], abs=0.02)


def test_calibrated_scores_stay_close_to_identity(rng):
    z = rng.normal(0, 1, 20000)
    y = (rng.random(z.size) < _sigmoid(z)).astype(int)
    platt = fit_platt(_sigmoid(z), y)
    assert platt.a == pytest.approx(1, abs=0.06) and platt.b == pytest.approx(0, abs=0.06)


def test_separable_scores_give_a_finite_fit_and_one_class_gives_identity():
    platt = fit_platt([0.1, 0.2, 0.3, 0.7, 0.8, 0.9], [0, 0, 0, 1, 1, 1])
    assert np.isfinite([platt.a, platt.b]).all() and platt.a > 0
    assert fit_platt([0.2, 0.9], [1, 1]) == IDENTITY
    with pytest.raises(ValueError, match="0/1"):
        fit_platt([0.2, 0.9], [0, 2])
    with pytest.raises(ValueError, match="length"):
        fit_platt([0.2, 0.9], [0])


def test_fit_is_deterministic_and_stores_as_two_floats(rng):
    s, y = rng.random(500), rng.integers(0, 2, 500)
    first, second = fit_platt(s, y), fit_platt(s, y)
    assert first == second
    doc = json.loads(json.dumps(first.to_dict()))
    assert set(doc) == {"a", "b"} and Platt.from_dict(doc) == first


def test_apply_is_monotone_and_identity_is_a_no_op(rng):
    s = np.sort(rng.random(100))
    np.testing.assert_allclose(apply_platt(s, IDENTITY), np.clip(s, 1e-7, 1 - 1e-7), rtol=1e-9)
    out = apply_platt(s, Platt(0.5, 0.3))
    assert np.all(np.diff(out) >= 0) and out.shape == s.shape


def test_calibration_fixes_an_argmax_skewed_by_one_overconfident_member(rng):
    """Three members equally informative, but member 0 squashes every score up: raw argmax over-picks class 0;
    after per-member Platt on validation, the argmax is accurate and each class is picked about equally."""

    def scores(n):
        y = rng.integers(0, 3, n)
        logits = rng.normal(0, 1, (n, 3)) + 1.5 * np.eye(3)[y] - 1.0
        s = _sigmoid(logits)
        s[:, 0] = _sigmoid(0.4 * logits[:, 0] + 2.0)  # same ranking within the column, different scale
        return y, s

    (y_val, s_val), (y_test, s_test) = scores(6000), scores(6000)
    raw = s_test.argmax(axis=1)
    platt = fit_members(s_val, y_val)
    fixed = calibrate_matrix(s_test, platt).argmax(axis=1)
    assert np.mean(raw == 0) > 0.6  # raw: mostly "class 0"
    assert np.mean(fixed == y_test) > np.mean(raw == y_test) + 0.1
    assert np.bincount(fixed, minlength=3).min() > 0.25 * len(fixed)
    with pytest.raises(ValueError, match="one calibration per column"):
        calibrate_matrix(s_test, platt[:2])

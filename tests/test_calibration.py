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
    fit_vector_scaling,
    vector_scaling_nll,
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


def _skewed_members(rng, n, k=4):
    """Members of ``k`` classes: equally informative logits, each distorted by its own scale and bias."""
    y = rng.integers(0, k, n)
    logits = rng.normal(0, 1, (n, k)) + 2.0 * np.eye(k)[y]
    scale, shift = np.linspace(0.3, 2.0, k), np.linspace(2.0, -2.0, k)
    return y, _sigmoid(logits * scale + shift)


def test_vector_scaling_lowers_the_multiclass_nll_and_beats_independent_platt(rng):
    y_val, s_val = _skewed_members(rng, 5000)
    y_test, s_test = _skewed_members(rng, 5000)
    k = s_val.shape[1]
    joint, platt = fit_vector_scaling(s_val, y_val), fit_members(s_val, y_val)
    identity = [IDENTITY] * k
    assert vector_scaling_nll(s_val, y_val, joint) < vector_scaling_nll(s_val, y_val, platt)
    assert vector_scaling_nll(s_val, y_val, joint) < vector_scaling_nll(s_val, y_val, identity) - 0.1
    assert vector_scaling_nll(s_test, y_test, joint) < vector_scaling_nll(s_test, y_test, identity) - 0.1
    # The distortion is undone: a_j * scale_j is one common temperature, the argmax is close to the ideal one.
    a = np.array([c.a for c in joint]) * np.linspace(0.3, 2.0, k)
    assert a.max() / a.min() < 1.15
    fixed = calibrate_matrix(s_test, joint).argmax(1)
    assert np.mean(fixed == y_test) > np.mean(s_test.argmax(1) == y_test) + 0.1
    assert all(c.a >= 0 for c in joint)  # increasing maps: each member keeps its ranking


def test_vector_scaling_is_deterministic_identity_safe_and_stored_like_platt(rng):
    # Members that already are softmax-calibrated logits: the fit stays at the identity.
    n, k = 20000, 3
    z = rng.normal(0, 1, (n, k))
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    y = (rng.random(n)[:, None] > p.cumsum(1)).sum(1)
    joint = fit_vector_scaling(_sigmoid(z), y)
    assert all(c.a == pytest.approx(1, abs=0.05) for c in joint)
    bs = np.array([c.b for c in joint])
    assert np.ptp(bs) < 0.05  # a common shift of every logit changes nothing in a softmax
    assert fit_vector_scaling(_sigmoid(z), y) == joint
    assert [Platt.from_dict(json.loads(json.dumps(c.to_dict()))) for c in joint] == joint
    # Nothing to gain (uninformative members, one row per class) gives the identity exactly.
    assert fit_vector_scaling(np.full((3, 3), 0.5), [0, 1, 2]) == [IDENTITY] * 3
    # A class with no validation row stays finite.
    y_small, s_small = _skewed_members(rng, 200)
    s_small[:, 3], y_small[y_small == 3] = 0.01, 0
    fitted = fit_vector_scaling(s_small, y_small)
    assert np.isfinite([[c.a, c.b] for c in fitted]).all()
    with pytest.raises(ValueError, match="class indices"):
        fit_vector_scaling(s_small, y_small + 4)
    with pytest.raises(ValueError, match=r"\(n, K\)"):
        fit_vector_scaling(s_small[:, 0], y_small)

"""Linear probe: deterministic, fitted on train only, C chosen on val only, head-shaped probabilities."""

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.preprocessing import StandardScaler

from postergenre.probe import C_GRID, fit_logistic, fit_probe, select_c, val_score

DIM, K = 12, 4
GRID = (1e-3, 1e-2, 1e-1, 1.0)


def blobs(
    rng: np.random.Generator, n: int, centers: np.ndarray, scale: float
) -> tuple[np.ndarray, np.ndarray]:
    """Noisy points around one centre per class, on features of very different scales (standardising matters)."""
    cls = rng.integers(0, len(centers), n)
    x = centers[cls] + rng.normal(0, 1.5, (n, centers.shape[1]))
    return (x * scale).astype(np.float32), np.eye(len(centers), dtype=np.float32)[cls]


@pytest.fixture(scope="module")
def splits():
    rng = np.random.default_rng(0)
    centers = rng.normal(0, 1, (K, DIM))
    scale = np.logspace(-2, 2, DIM)
    return {name: blobs(rng, n, centers, scale) for name, n in (("train", 300), ("val", 150), ("test", 150))}


def test_grid_is_log_spaced_from_1e_4_to_1e2():
    assert C_GRID[0] == pytest.approx(1e-4) and C_GRID[-1] == pytest.approx(1e2)
    assert np.allclose(np.diff(np.log10(C_GRID)), 0.5)


def test_probe_is_deterministic_and_learns(splits):
    (xt, yt), (xv, yv), (xs, ys) = splits["train"], splits["val"], splits["test"]
    first = fit_probe(xt, yt, xv, yv, predict={"test": xs}, c_grid=GRID)
    second = fit_probe(xt, yt, xv, yv, predict={"test": xs}, c_grid=GRID)
    np.testing.assert_array_equal(first.proba["test"], second.proba["test"])
    assert (first.C, first.val_scores) == (second.C, second.val_scores)
    assert first.proba["test"].shape == (len(xs), K)
    np.testing.assert_allclose(first.proba["test"].sum(axis=1), 1.0)
    test_f1 = f1_score(ys.argmax(1), first.proba["test"].argmax(1), average="macro")
    assert test_f1 > 2 / K  # well above chance (1/K)
    assert first.val_score == max(first.val_scores.values())


def test_the_fit_for_a_fixed_c_uses_only_train(splits):
    """Same train rows, val labels permuted (and test rows changed): the chosen-C model is the same model."""
    (xt, yt), (xv, yv), (xs, _) = splits["train"], splits["val"], splits["test"]
    rng = np.random.default_rng(1)
    a = fit_probe(xt, yt, xv, yv, predict={"test": xs}, c_grid=(0.1,))
    b = fit_probe(xt, yt, xv, yv[rng.permutation(len(yv))], predict={"test": xs[::-1]}, c_grid=(0.1,))
    np.testing.assert_array_equal(a.probe.model.coef_, b.probe.model.coef_)
    np.testing.assert_array_equal(a.probe.model.intercept_, b.probe.model.intercept_)
    np.testing.assert_array_equal(a.proba["test"], b.proba["test"][::-1])
    assert a.val_score != b.val_score  # the permuted labels were seen, by the score only
    # And that model is scikit-learn's on train-standardised features.
    scaler = StandardScaler().fit(xt.astype(np.float64))
    reference = LogisticRegression(C=0.1, max_iter=2000).fit(
        scaler.transform(xt.astype(np.float64)), yt.argmax(1)
    )
    np.testing.assert_allclose(a.probe.model.coef_, reference.coef_, rtol=1e-4, atol=1e-6)


def test_c_is_chosen_on_val_only(splits):
    """The choice is the argmax of the val scores; the rows to predict (test) never change it."""
    (xt, yt), (xv, yv), (xs, _) = splits["train"], splits["val"], splits["test"]
    with_test = fit_probe(xt, yt, xv, yv, predict={"test": xs}, c_grid=GRID)
    other_test = fit_probe(xt, yt, xv, yv, predict={"test": np.zeros_like(xs)}, c_grid=GRID)
    assert with_test.C == other_test.C and with_test.val_scores == other_test.val_scores
    by_hand = {c: val_score(fit_logistic(xt, yt, c), xv, yv) for c in GRID}
    assert with_test.val_scores == by_hand and select_c(by_hand) == with_test.C
    # Val drives the choice: on val rows the C=1e-3 probe gets right and the others do not, it wins.
    fits = {c: fit_logistic(xt, yt, c) for c in GRID}
    preds = {c: fits[c].predict_proba(xv).argmax(1) for c in GRID}
    rigged = np.where(preds[1e-3] != preds[1.0], preds[1e-3], (preds[1.0] + 1) % K)
    rigged_y = np.eye(K, dtype=np.float32)[rigged]
    assert fit_probe(xt, yt, xv, rigged_y, c_grid=GRID).C == 1e-3


def test_select_c_breaks_ties_towards_the_stronger_penalty():
    assert select_c({1.0: 0.5, 0.01: 0.5, 10.0: 0.4}) == 0.01
    with pytest.raises(ValueError):
        select_c({})


def test_binary_probe_returns_one_positive_column_and_takes_sample_weights(splits):
    (xt, yt), (xv, yv), _ = splits["train"], splits["val"], splits["test"]
    yb, yvb = yt[:, :1], yv[:, :1]  # "class 0 or not", a 0/1 column like an OvA member's target
    result = fit_probe(xt, yb, xv, yvb, predict={"val": xv}, c_grid=GRID, criterion="log_loss")
    assert result.proba["val"].shape == (len(xv), 1)
    assert result.val_score == pytest.approx(
        -np.mean(-np.log(np.where(yvb[:, 0] == 1, result.proba["val"][:, 0], 1 - result.proba["val"][:, 0])))
    )
    # Weighting the positives up moves the decision towards them: more rows are called positive.
    plain = fit_logistic(xt, yb, 0.1).predict_proba(xv)[:, 0]
    weights = np.where(yb[:, 0] == 1, 5.0, 1.0)
    heavy = fit_logistic(xt, yb, 0.1, sample_weight=weights).predict_proba(xv)[:, 0]
    assert (heavy > 0.5).sum() > (plain > 0.5).sum()
    with pytest.raises(ValueError, match="criterion"):
        val_score(fit_logistic(xt, yb, 0.1), xv, yvb, "accuracy")


def test_a_class_missing_from_train_gets_probability_zero(splits):
    (xt, yt), (xv, _), _ = splits["train"], splits["val"], splits["test"]
    keep = yt.argmax(1) != 2
    probe = fit_logistic(xt[keep], yt[keep], 1.0)
    p = probe.predict_proba(xv)
    assert p.shape == (len(xv), K) and np.all(p[:, 2] == 0)
    np.testing.assert_allclose(p.sum(axis=1), 1.0)

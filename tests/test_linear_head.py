"""The linear probe as a Keras head gives the probe's probabilities, so it can be registered in its place."""

from __future__ import annotations

import numpy as np
import pytest

from postergenre.linear_head import linear_head
from postergenre.probe import fit_logistic


def _data(n: int, d: int, k: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    x = rng.normal(size=(n, d)) * rng.uniform(0.1, 5, d) + rng.normal(size=d) * 3
    x[:, 0] += y * 2.0  # one informative feature; a constant one checks zero variance
    x[:, 1] = 7.0
    return x.astype(np.float32), y


@pytest.mark.parametrize(("k", "one_hot"), [(5, True), (2, True), (2, False)], ids=["5-class", "2-class", "binary"])
def test_the_keras_head_predicts_what_the_probe_predicts(k, one_hot):
    x, y = _data(300, 12, k)
    targets = np.eye(k)[y] if one_hot else y[:, None].astype(float)
    probe = fit_logistic(x, targets, C=0.3)
    head = linear_head(probe, x.shape[1])
    np.testing.assert_allclose(head.predict(x, verbose=0), probe.predict_proba(x), atol=1e-5)
    assert head.name == "head"


def test_a_class_absent_from_train_gets_no_probability():
    x, y = _data(200, 6, 3)
    keep = y != 1
    probe = fit_logistic(x[keep], np.eye(4)[y[keep]], C=1.0)  # classes 1 and 3 never seen
    out = linear_head(probe, x.shape[1]).predict(x, verbose=0)
    assert out.shape == (200, 4) and out[:, [1, 3]].max() < 1e-9
    np.testing.assert_allclose(out, probe.predict_proba(x), atol=1e-5)

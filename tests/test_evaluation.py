"""Evaluation metrics (Tables 1-4) and the champion-vs-challenger decision."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)

from postergenre.evaluation import (
    DecisionPolicy,
    binary_metrics,
    bootstrap_macro_f1,
    choose_thresholds,
    decide,
    f1_comparison_table,
    multiclass_metrics,
    ova_ensemble_metrics,
    paired_bootstrap_macro_f1,
    render_markdown,
)
from postergenre.genres import GENRES

K = len(GENRES)


def _json_ok(obj) -> None:
    json.dumps(obj, allow_nan=False)


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _noisy_predictions(y: np.ndarray, accuracy: float, rng: np.random.Generator) -> np.ndarray:
    """Right on a random ``accuracy`` share of rows, a uniformly random wrong class elsewhere."""
    wrong = (y + rng.integers(1, K, y.size)) % K
    return np.where(rng.random(y.size) < accuracy, y, wrong)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(7)


# ---------------------------------------------------------------------------------------------- Tables 1-2


def test_multiclass_hand_computed():
    classes = ["a", "b", "c"]
    y = np.array([0, 1, 2, 0])
    proba = np.array(
        [
            [0.7, 0.2, 0.1],  # right, true-class p 0.7 > 0.5
            [0.3, 0.4, 0.3],  # right, but 0.4: Keras recall misses it
            [0.5, 0.3, 0.2],  # wrong (pred a); true p 0.2
            [0.2, 0.6, 0.2],  # wrong (pred b); true p 0.2
        ]
    )
    m = multiclass_metrics(y, proba, classes)
    assert m["loss"] == pytest.approx(-np.mean(np.log([0.7, 0.4, 0.2, 0.2])))
    assert m["accuracy"] == pytest.approx(0.5)
    assert m["recall"] == pytest.approx(0.25)
    assert m["confusion"] == [[1, 1, 0], [0, 1, 0], [1, 0, 0]]
    # a: P 1/2, R 1/2; b: P 1/2, R 1; c: never predicted, never right
    assert m["per_class"]["a"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2})
    assert m["per_class"]["b"] == pytest.approx({"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1})
    assert m["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert m["macro_f1"] == pytest.approx((0.5 + 2 / 3 + 0) / 3)
    _json_ok(m)


def test_keras_recall_is_share_of_true_class_probabilities_above_half():
    y = np.array([0, 1, 1])
    proba = np.array([[0.5, 0.5], [0.49, 0.51], [0.9, 0.1]])  # exactly 0.5 is not > 0.5
    m = multiclass_metrics(y, proba, ["x", "y"])
    assert m["recall"] == pytest.approx(1 / 3)
    # the conventional recall is different: class x 1/1, class y 1/2 (argmax tie goes to the first class)
    assert m["macro_recall"] == pytest.approx((1 + 0.5) / 2)


def test_loss_is_clipped_and_finite():
    m = multiclass_metrics([1], [[1.0, 0.0]], ["x", "y"])
    assert m["loss"] == pytest.approx(-math.log(1e-7))
    perfect = multiclass_metrics([0], [[1.0, 0.0]], ["x", "y"])
    assert 0 < perfect["loss"] < 1e-6


def test_per_class_matches_sklearn(rng):
    y = rng.integers(0, K, 3000)
    proba = _softmax(rng.normal(size=(3000, K)) + 1.5 * np.eye(K)[y])
    proba[:, 12] *= 0.01  # Mystery: (almost) never the argmax -> zero-division path
    proba /= proba.sum(axis=1, keepdims=True)
    m = multiclass_metrics(y, proba, GENRES)
    pred = proba.argmax(axis=1)
    p, r, f, s = precision_recall_fscore_support(y, pred, labels=range(K), zero_division=0)
    for j, g in enumerate(GENRES):
        assert m["per_class"][g] == pytest.approx(
            {"precision": p[j], "recall": r[j], "f1": f[j], "support": s[j]}
        )
    assert m["macro_f1"] == pytest.approx(
        f1_score(y, pred, labels=range(K), average="macro", zero_division=0)
    )
    assert m["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert m["confusion"] == confusion_matrix(y, pred, labels=range(K)).tolist()
    _json_ok(m)


def test_multiclass_rejects_bad_shapes():
    with pytest.raises(ValueError, match="shape"):
        multiclass_metrics([0, 1], [[0.5, 0.5]], ["x", "y"])
    with pytest.raises(ValueError, match="lie in"):
        multiclass_metrics([0, 2], [[0.5, 0.5], [0.5, 0.5]], ["x", "y"])


# ---------------------------------------------------------------------------------------------- Table 3


def test_binary_hand_computed():
    y = np.array([1, 0, 1, 0])
    p = np.array([0.9, 0.6, 0.4, 0.1])  # predicted [1, 1, 0, 0]: TP 1, FP 1, FN 1, TN 1
    m = binary_metrics(y, p)
    assert m["loss"] == pytest.approx(-np.mean(np.log([0.9, 0.4, 0.4, 0.9])))
    assert (m["accuracy"], m["precision"], m["recall"], m["f1"]) == pytest.approx((0.5, 0.5, 0.5, 0.5))
    low = binary_metrics(y, p, threshold=0.3)  # predicted [1, 1, 1, 0]
    assert (low["precision"], low["recall"], low["accuracy"]) == pytest.approx((2 / 3, 1.0, 0.75))
    at = binary_metrics(y, p, threshold=0.9)  # 0.9 is not > 0.9: nothing predicted
    assert (at["precision"], at["recall"], at["f1"]) == (0.0, 0.0, 0.0)
    _json_ok(m)


# ---------------------------------------------------------------------------------------------- thresholds


def test_threshold_choice_hand_constructed():
    # genre "b": positives score 0.30 and 0.35, negatives 0.10, 0.20, 0.32.
    # cut above 0.35: F1 0; 0.32-0.35: 2/3; 0.30-0.32: 1/2; 0.20-0.30: 4/5 (best); below 0.20: 2/3 and 4/7
    y = np.array([1, 1, 0, 0, 0])
    scores_b = np.array([0.30, 0.35, 0.10, 0.20, 0.32])
    proba = np.column_stack([1 - scores_b, scores_b])
    t = choose_thresholds(y, proba, ["a", "b"])
    assert 0.20 < t["b"] < 0.30
    assert binary_metrics(y, scores_b, t["b"])["f1"] == pytest.approx(0.8)


def test_threshold_choice_beats_every_grid_threshold(rng):
    n = 2000
    y = rng.integers(0, 3, n)
    proba = 1 / (1 + np.exp(-(rng.normal(size=(n, 3)) + 1.2 * np.eye(3)[y] - 1.0)))
    t = choose_thresholds(y, proba, ["a", "b", "c"])
    for j, g in enumerate(["a", "b", "c"]):
        best = binary_metrics(y == j, proba[:, j], t[g])["f1"]
        grid = [binary_metrics(y == j, proba[:, j], u)["f1"] for u in np.linspace(0, 1, 201)]
        assert best >= max(grid) - 1e-12
    _json_ok(t)


def test_threshold_without_positives_defaults_to_half():
    t = choose_thresholds([0, 0], [[0.9, 0.2], [0.8, 0.7]], ["a", "b"])
    assert t["b"] == 0.5


# ---------------------------------------------------------------------------------------------- OvA / Table 4


def test_ova_argmax_equals_multiclass_on_same_probabilities(rng):
    y = rng.integers(0, K, 1500)
    proba = 1 / (1 + np.exp(-(rng.normal(size=(1500, K)) + np.eye(K)[y] - 1)))
    ova = ova_ensemble_metrics(y, proba, GENRES, {g: 0.5 for g in GENRES})
    mc = multiclass_metrics(y, proba, GENRES)
    for key in ("accuracy", "macro_f1", "per_class", "confusion", "n"):
        assert ova["argmax"][key] == mc[key]
    _json_ok(ova)


def test_ova_multilabel_matches_sklearn(rng):
    classes = ["a", "b", "c", "d"]
    y = rng.integers(0, 4, 800)
    proba = rng.random((800, 4)) * 0.6 + 0.4 * np.eye(4)[y]
    thresholds = {"a": 0.5, "b": 0.4, "c": 0.6, "d": 0.55}
    m = ova_ensemble_metrics(y, proba, classes, thresholds)["multilabel"]
    truth = np.eye(4, dtype=int)[y]
    pred = (proba > np.array(list(thresholds.values()))).astype(int)
    assert m["micro_f1"] == pytest.approx(f1_score(truth, pred, average="micro"))
    assert m["macro_f1"] == pytest.approx(f1_score(truth, pred, average="macro", zero_division=0))
    assert m["subset_accuracy"] == pytest.approx(accuracy_score(truth, pred))
    assert m["mean_labels_per_poster"] == pytest.approx(pred.sum(axis=1).mean())
    assert m["no_label_rate"] == pytest.approx(np.mean(pred.sum(axis=1) == 0))
    per = f1_score(truth, pred, average=None, zero_division=0)
    assert [m["per_class"][g]["f1"] for g in classes] == pytest.approx(per)
    with pytest.raises(ValueError, match="missing"):
        ova_ensemble_metrics(y, proba, classes, {"a": 0.5})


def test_f1_comparison_table(rng):
    y = rng.integers(0, K, 1000)
    cnn = multiclass_metrics(y, _softmax(rng.normal(size=(1000, K)) + np.eye(K)[y]), GENRES)
    ova = ova_ensemble_metrics(y, rng.random((1000, K)), GENRES, {g: 0.5 for g in GENRES})
    rows = f1_comparison_table(cnn, ova, GENRES)
    assert [r["genre"] for r in rows] == list(GENRES)
    for r in rows:
        assert r["f1_cnn"] == cnn["per_class"][r["genre"]]["f1"]
        assert r["f1_ova"] == ova["argmax"]["per_class"][r["genre"]]["f1"]
        assert r["f1_ova_threshold"] == ova["multilabel"]["per_class"][r["genre"]]["f1"]
    _json_ok(rows)


def test_render_markdown_has_all_tables_and_genres(rng):
    def split(n):
        y = rng.integers(0, K, n)
        return y, multiclass_metrics(y, _softmax(rng.normal(size=(n, K)) + np.eye(K)[y]), GENRES)

    cnn = {name: split(400)[1] for name in ("train", "val")}
    y_test, cnn["test"] = split(600)
    ova_p = rng.random((600, K))
    report = {
        "classes": list(GENRES),
        "cnn": cnn,
        "ova_members": {g: binary_metrics(y_test == j, ova_p[:, j]) for j, g in enumerate(GENRES)},
        "ova": ova_ensemble_metrics(y_test, ova_p, GENRES, {g: 0.5 for g in GENRES}),
    }
    _json_ok(report)
    md = render_markdown(report)
    for n in range(1, 5):
        assert f"## Table {n}:" in md
    assert "| Metric | train | val | test |" in md
    assert "| Genre | Precision | Recall | F1 | Support |" in md
    assert "| Genre | Loss | Accuracy | Recall | Precision | F1 |" in md
    assert "| Genre | F1 (OvA, argmax) | F1 (OvA, thresholds) | F1 (CNN) |" in md
    for g in GENRES:  # one row in each of Tables 2, 3 and 4
        assert sum(line.startswith(f"| {g} |") for line in md.splitlines()) == 3
    only_cnn = render_markdown({"classes": list(GENRES), "cnn": cnn})
    assert "## Table 2:" in only_cnn and "## Table 3:" not in only_cnn and "## Table 4:" not in only_cnn


# ---------------------------------------------------------------------------------------------- bootstrap


def test_bootstrap_identical_predictions_is_exactly_zero(rng):
    y = rng.integers(0, K, 5000)
    pred = _noisy_predictions(y, 0.3, rng)
    b = paired_bootstrap_macro_f1(y, pred, pred.copy(), K, n_bootstrap=300, seed=1, confidence=0.95)
    assert (b["delta"], b["ci_low"], b["ci_high"], b["p_better"]) == (0.0, 0.0, 0.0, 0.0)


def test_bootstrap_is_paired(rng):
    # the challenger only fixes 40 of the champion's mistakes: on every resample of the same rows it can
    # only gain macro-F1, so a paired CI sits at or above 0 although the gain is far below unpaired noise
    y = rng.integers(0, K, 8000)
    champion = _noisy_predictions(y, 0.25, rng)
    challenger = champion.copy()
    challenger[np.flatnonzero(champion != y)[:40]] = y[np.flatnonzero(champion != y)[:40]]
    b = paired_bootstrap_macro_f1(y, challenger, champion, K, n_bootstrap=400, seed=0, confidence=0.95)
    assert 0 < b["delta"] < 0.01
    assert 0 <= b["ci_low"] <= b["delta"] <= b["ci_high"]
    assert b["p_better"] > 0.95


def test_bootstrap_matches_naive_sklearn_loop():
    rng = np.random.default_rng(3)
    n, k, reps = 300, 4, 40
    y = rng.integers(0, k, n)
    a = np.where(rng.random(n) < 0.6, y, rng.integers(0, k, n))
    c = np.where(rng.random(n) < 0.5, y, rng.integers(0, k, n))
    b = paired_bootstrap_macro_f1(y, a, c, k, n_bootstrap=reps, seed=11, confidence=0.9)
    idx = np.random.default_rng(11).integers(0, n, size=(reps, n))

    def macro(t, p):
        return f1_score(t, p, labels=range(k), average="macro", zero_division=0)

    deltas = [macro(y[i], a[i]) - macro(y[i], c[i]) for i in idx]
    assert b["delta"] == pytest.approx(macro(y, a) - macro(y, c))
    assert [b["ci_low"], b["ci_high"]] == pytest.approx(np.quantile(deltas, [0.05, 0.95]))
    assert b["p_better"] == pytest.approx(np.mean(np.array(deltas) > 0))


def test_bootstrap_ci_contains_population_delta(rng):
    # a large "population" with a known macro-F1 gap; the CI from one test sample should cover it
    population = rng.integers(0, K, 200_000)
    champ_all = _noisy_predictions(population, 0.25, rng)
    chal_all = _noisy_predictions(population, 0.28, rng)
    true_delta = f1_score(population, chal_all, average="macro") - f1_score(
        population, champ_all, average="macro"
    )
    sample = rng.choice(population.size, 6000, replace=False)
    b = paired_bootstrap_macro_f1(
        population[sample], chal_all[sample], champ_all[sample], K, n_bootstrap=500, seed=2, confidence=0.95
    )
    assert b["ci_low"] <= true_delta <= b["ci_high"]
    assert b["ci_low"] < b["delta"] < b["ci_high"]
    _json_ok(b)


# ---------------------------------------------------------------------------------------------- decide


@pytest.fixture
def test_set(rng):
    y = np.repeat(np.arange(K), 300)  # balanced, like the report's test split
    champion = _noisy_predictions(y, 0.25, rng)
    return y, champion


POLICY = DecisionPolicy(n_bootstrap=300)


def _better_than(y, base, extra_share, rng):
    """Keep ``base``'s right answers and also fix ``extra_share`` of its mistakes."""
    out = base.copy()
    wrong = np.flatnonzero(base != y)
    fix = rng.choice(wrong, int(extra_share * wrong.size), replace=False)
    out[fix] = y[fix]
    return out


def test_decide_promotes_clearly_better_challenger(test_set, rng):
    y, champion = test_set
    d = decide(y, _better_than(y, champion, 0.2, rng), champion, GENRES, POLICY)
    assert d["promote"] is True
    assert all(c["passed"] for c in d["checks"])
    assert d["challenger"]["macro_f1"] > d["champion"]["macro_f1"] + 0.1
    assert d["bootstrap"]["ci_low"] > 0
    assert d["reason"].startswith("promoted")
    _json_ok(d)


def test_decide_keeps_champion_against_worse_challenger(test_set, rng):
    y, champion = test_set
    strong = _better_than(y, champion, 0.2, rng)
    d = decide(y, champion, strong, GENRES, POLICY)  # the weaker model as challenger
    assert d["promote"] is False
    gain = next(c for c in d["checks"] if c["name"] == "macro_f1_gain_ci_low")
    assert gain["passed"] is False and gain["value"] < 0
    assert d["reason"].startswith("kept champion")
    _json_ok(d)


def test_decide_blocks_a_genre_collapse_despite_better_average(test_set, rng):
    y, champion = test_set
    western = GENRES.index("Western")
    challenger = _better_than(y, champion, 0.2, rng)
    challenger[challenger == western] = GENRES.index("Action")  # never predicts Western any more
    d = decide(y, challenger, champion, GENRES, POLICY)
    assert d["challenger"]["macro_f1"] > d["champion"]["macro_f1"]
    checks = {c["name"]: c for c in d["checks"]}
    assert checks["macro_f1_gain_ci_low"]["passed"] is True
    assert checks["max_class_f1_drop"]["passed"] is False
    assert checks["max_class_f1_drop"]["value"] == pytest.approx(d["champion"]["per_class_f1"]["Western"])
    assert d["per_class_f1_change"]["Western"] < -0.05
    assert d["promote"] is False and "Western" in d["reason"]


def test_decide_first_run_floor_both_ways(rng):
    y = np.repeat(np.arange(K), 200)
    good = decide(y, _noisy_predictions(y, 0.25, rng), None, GENRES, POLICY)
    assert good["promote"] is True and good["champion"] is None and good["bootstrap"] is None
    assert good["checks"][0]["threshold"] == pytest.approx(1.5 / K)
    guess = decide(y, rng.integers(0, K, y.size), None, GENRES, POLICY)  # chance level, ~1/K
    assert guess["promote"] is False and guess["checks"][0]["passed"] is False
    assert guess["reason"].startswith("rejected")
    _json_ok(good)
    _json_ok(guess)


def test_decide_binary_ova_member_uses_same_path(rng):
    classes = ["other", "Western"]
    y = (rng.random(3000) < 0.3).astype(int)
    champion = np.where(rng.random(3000) < 0.7, y, 1 - y)
    challenger = np.where(rng.random(3000) < 0.85, y, 1 - y)
    d = decide(y, challenger, champion, classes, POLICY)
    assert d["promote"] is True
    assert set(d["per_class_f1_change"]) == set(classes)
    first = decide(y, challenger, None, classes, DecisionPolicy(min_macro_f1_over_chance=1.2))
    assert first["checks"][0]["threshold"] == pytest.approx(0.6) and first["promote"] is True


@pytest.mark.slow
def test_matches_keras_losses_and_metrics(rng):
    """The report's numbers came from Keras; check the numpy re-implementations against it."""
    keras = pytest.importorskip("keras")
    y = rng.integers(0, K, 500)
    proba = _softmax(rng.normal(size=(500, K)) * 2 + np.eye(K)[y])
    onehot = np.eye(K, dtype="float32")[y]
    m = multiclass_metrics(y, proba, GENRES)
    cce = keras.losses.CategoricalCrossentropy()(onehot, proba.astype("float32"))
    assert m["loss"] == pytest.approx(float(cce), rel=1e-5)
    rec = keras.metrics.Recall()
    rec.update_state(onehot, proba.astype("float32"))
    assert m["recall"] == pytest.approx(float(rec.result()), abs=1e-6)
    yb = (y == 0).astype("float32")
    pb = proba[:, 0].astype("float32")
    bm = binary_metrics(yb, pb)
    assert bm["loss"] == pytest.approx(float(keras.losses.BinaryCrossentropy()(yb, pb)), rel=1e-4)
    acc = keras.metrics.BinaryAccuracy()
    acc.update_state(yb, pb)
    assert bm["accuracy"] == pytest.approx(float(acc.result()), abs=1e-6)


# ---------------------------------------------------------------------------------------------- probe gate


def test_single_model_bootstrap_ci_brackets_its_macro_f1(rng):
    y = np.repeat(np.arange(K), 100)
    pred = _noisy_predictions(y, 0.4, rng)
    b = bootstrap_macro_f1(y, pred, K, n_bootstrap=400, seed=1)
    assert b["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro"))
    assert b["ci_low"] < b["macro_f1"] < b["ci_high"] and b["ci_high"] - b["ci_low"] < 0.15
    assert bootstrap_macro_f1(y, pred, K, n_bootstrap=400, seed=1) == b
    _json_ok(b)


def test_probe_margin_is_recorded_and_a_head_below_its_probe_is_refused(test_set, rng):
    y, champion = test_set
    probe = _better_than(y, champion, 0.3, rng)  # the linear probe on the same features is clearly better
    head = champion  # a head well above the floor but below its probe
    d = decide(y, head, None, GENRES, POLICY, pred_probe=probe)
    checks = {c["name"]: c for c in d["checks"]}
    assert checks["macro_f1_floor"]["passed"] is True and checks["probe_parity"]["passed"] is False
    assert d["promote"] is False and "linear probe" in d["reason"] and d["reason"].startswith("rejected")
    assert d["probe"]["margin"] == pytest.approx(d["challenger"]["macro_f1"] - d["probe"]["macro_f1"])
    assert d["probe"]["bootstrap"]["ci_high"] < 0 and d["probe"]["below_with_confidence"] is True
    _json_ok(d)
    # The same head against a champion it clearly beats: still refused, the probe says why.
    weak_champion = _noisy_predictions(y, 0.1, rng)
    d = decide(y, head, weak_champion, GENRES, POLICY, pred_probe=probe)
    checks = {c["name"]: c for c in d["checks"]}
    assert checks["macro_f1_gain_ci_low"]["passed"] is True and checks["probe_parity"]["passed"] is False
    assert d["promote"] is False and d["reason"].startswith("kept champion") and "linear probe" in d["reason"]
    # With the requirement off, the margin is still written down but does not block.
    lenient = decide(
        y, head, None, GENRES, DecisionPolicy(n_bootstrap=300, require_probe_parity=False), pred_probe=probe
    )
    assert lenient["promote"] is True and lenient["probe"]["below_with_confidence"] is True
    assert lenient["probe"]["required"] is False


def test_a_head_at_parity_with_its_probe_passes_and_no_probe_checks_nothing(test_set, rng):
    y, champion = test_set
    probe = champion.copy()
    flip = rng.choice(y.size, 60, replace=False)  # a different but equally good set of predictions
    probe[flip] = _noisy_predictions(y[flip], 0.25, rng)
    d = decide(y, champion, None, GENRES, POLICY, pred_probe=probe)
    assert d["promote"] is True and d["probe"]["below_with_confidence"] is False
    assert d["probe"]["bootstrap"]["ci_low"] < 0 < d["probe"]["bootstrap"]["ci_high"]
    assert "margin to linear probe" in d["reason"]
    without = decide(y, champion, None, GENRES, POLICY)
    assert without["probe"] is None and [c["name"] for c in without["checks"]] == ["macro_f1_floor"]


@pytest.mark.slow
def test_gate_refuses_a_head_trained_on_shuffled_labels_and_passes_a_real_one():
    """End to end on features: a good probe, a head that learnt nothing (shuffled training labels) and a head
    trained on the true labels, all on the same split; the gate refuses the first and promotes the second."""
    from postergenre.probe import fit_probe
    from postergenre.training import HeadData, fit_head

    rng = np.random.default_rng(5)
    k, dim = 5, 16
    centers = rng.normal(0, 1, (k, dim)) * 2.5

    def blobs(n):
        cls = np.repeat(np.arange(k), n // k)
        return (centers[cls] + rng.normal(0, 1, (n, dim))).astype(np.float32), np.eye(k, dtype=np.float32)[
            cls
        ]

    (xt, yt), (xv, yv), (xs, ys) = blobs(500), blobs(250), blobs(500)
    y_test, classes = ys.argmax(axis=1), [f"g{i}" for i in range(k)]
    probe = fit_probe(xt, yt, xv, yv, predict={"test": xs}).proba["test"].argmax(axis=1)
    args = dict(
        kind="multiclass", units=64, dropout=True, max_epochs=15, batch_size=32, seed=0, normalize=True
    )
    shuffled, _ = fit_head(HeadData(xt, yt[rng.permutation(len(yt))], xv, yv), **args)
    real, _ = fit_head(HeadData(xt, yt, xv, yv), **args)
    policy = DecisionPolicy(n_bootstrap=300, min_macro_f1_over_chance=1.0)
    bad = decide(y_test, shuffled.predict(xs, verbose=0).argmax(1), None, classes, policy, pred_probe=probe)
    good = decide(y_test, real.predict(xs, verbose=0).argmax(1), None, classes, policy, pred_probe=probe)
    assert bad["promote"] is False and "linear probe" in bad["reason"]
    assert {c["name"]: c["passed"] for c in bad["checks"]}["probe_parity"] is False
    assert good["promote"] is True and good["probe"]["below_with_confidence"] is False
    assert good["probe"]["macro_f1"] > 0.8  # the probe is a good one


def test_decision_names_still_import_from_evaluation():
    """The decision moved to decision.py; steps and plugins that import it from evaluation get the same objects."""
    from postergenre import decision, evaluation

    for name in ("DecisionPolicy", "decide", "paired_bootstrap_macro_f1", "bootstrap_macro_f1"):
        assert getattr(evaluation, name) is getattr(decision, name)
    with pytest.raises(AttributeError):
        evaluation.no_such_name  # noqa: B018

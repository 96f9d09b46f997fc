"""Genre-distribution drift: every figure is checked against an independent textbook computation."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from postergenre.config import Settings
from postergenre.drift import (
    DriftThresholds,
    distribution_drift,
    drift_report,
    render_text,
    severity_rank,
)

T = DriftThresholds(warn_js=0.05, alert_js=0.10, warn_psi=0.10, alert_psi=0.25)


# --- independent reference formulas -------------------------------------------------------------------------


def shares(counts: dict[str, int], genres: list[str]) -> np.ndarray:
    v = np.array([counts.get(g, 0) for g in genres], dtype=float)
    return v / v.sum()


def ref_js(p: np.ndarray, q: np.ndarray) -> float:
    """sqrt of the JS divergence in bits, from the definition: mean KL to the midpoint."""
    m = (p + q) / 2

    def kl(a: np.ndarray) -> float:
        nz = a > 0
        return float(np.sum(a[nz] * np.log2(a[nz] / m[nz])))

    return math.sqrt((kl(p) + kl(q)) / 2)


def ref_psi(p: np.ndarray, q: np.ndarray, eps: float) -> float:
    p2 = [max(x, eps) for x in p]
    q2 = [max(x, eps) for x in q]
    p2 = [x / sum(p2) for x in p2]
    q2 = [x / sum(q2) for x in q2]
    return sum((a - b) * math.log(a / b) for a, b in zip(p2, q2, strict=True))


def ref_z_p(x1: int, n1: int, x2: int, n2: int) -> float:
    pooled = (x1 + x2) / (n1 + n2)
    z = (x1 / n1 - x2 / n2) / math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    return math.erfc(abs(z) / math.sqrt(2))


def ref_chi2_stat(c: list[int], b: list[int]) -> float:
    table = np.array([c, b], dtype=float)
    expected = table.sum(1, keepdims=True) * table.sum(0, keepdims=True) / table.sum()
    return float(np.sum((table - expected) ** 2 / expected))


def summary(raw: dict[str, int], collapsed: dict[str, int] | None = None) -> dict:
    collapsed = raw if collapsed is None else collapsed
    return {"raw": raw, "collapsed": collapsed, "movies": sum(collapsed.values())}


# --- distribution_drift -------------------------------------------------------------------------------------


def test_identical_distributions_have_zero_drift():
    counts = {"Action": 300, "Drama": 500, "Horror": 200}
    d = distribution_drift(counts, {g: 3 * n for g, n in counts.items()}, T)  # same shares, other size
    assert d["js_distance"] == pytest.approx(0, abs=1e-12)
    assert d["psi"] == pytest.approx(0, abs=1e-12)
    assert d["linf"] == pytest.approx(0, abs=1e-12)
    assert d["chi2"]["p_value"] == pytest.approx(1)
    assert d["chi2"]["dof"] == 2
    assert d["severity"] == "ok" and d["reasons"] == []
    assert not any(row["significant"] for row in d["per_genre"].values())
    assert d["new_genres"] == [] and d["vanished_genres"] == []


def test_strong_shift_alerts():
    base, cur = {"Drama": 500, "Comedy": 500}, {"Drama": 800, "Comedy": 200}
    genres = ["Comedy", "Drama"]
    p, q = shares(cur, genres), shares(base, genres)
    d = distribution_drift(cur, base, T)
    assert d["js_distance"] == pytest.approx(ref_js(p, q))
    assert d["psi"] == pytest.approx(ref_psi(p, q, T.psi_epsilon))
    assert ref_js(p, q) >= T.alert_js  # precondition: the case really is strong
    assert d["severity"] == "alert"
    assert any(r.startswith("js") and "alert" in r for r in d["reasons"])
    assert any(r.startswith("psi") and "alert" in r for r in d["reasons"])


def test_moderate_shift_warns_on_js_only():
    base, cur = {"Drama": 500, "Comedy": 500}, {"Drama": 580, "Comedy": 420}
    genres = ["Comedy", "Drama"]
    p, q = shares(cur, genres), shares(base, genres)
    assert T.warn_js <= ref_js(p, q) < T.alert_js  # preconditions: JS in the warn band, PSI below warn
    assert ref_psi(p, q, T.psi_epsilon) < T.warn_psi
    d = distribution_drift(cur, base, T)
    assert d["severity"] == "warn"
    assert len(d["reasons"]) == 1 and d["reasons"][0].startswith("js") and "warn" in d["reasons"][0]


def test_js_symmetric_bounded_and_one_for_disjoint_support():
    a, b = {"Action": 70, "Drama": 30, "War": 5}, {"Action": 10, "Drama": 60, "Western": 40}
    assert distribution_drift(a, b, T)["js_distance"] == pytest.approx(
        distribution_drift(b, a, T)["js_distance"]
    )
    disjoint = distribution_drift({"Action": 10}, {"Drama": 10}, T)
    assert disjoint["js_distance"] == pytest.approx(1)
    assert disjoint["js_distance"] <= 1
    assert disjoint["linf"] == pytest.approx(1)


def test_psi_finite_with_empty_bins_and_matches_epsilon_formula():
    cur, base = {"Action": 90, "Drama": 10, "War": 0}, {"Action": 50, "Drama": 0, "War": 50}
    genres = ["Action", "Drama", "War"]
    for eps in (1e-4, 1e-2):
        t = DriftThresholds(0.05, 0.1, 0.1, 0.25, psi_epsilon=eps)
        d = distribution_drift(cur, base, t)
        assert math.isfinite(d["psi"])
        assert d["psi"] == pytest.approx(ref_psi(shares(cur, genres), shares(base, genres), eps))
    # a smaller epsilon treats an empty bin as rarer, so the same shift costs more
    small = distribution_drift(cur, base, DriftThresholds(0.05, 0.1, 0.1, 0.25, psi_epsilon=1e-6))["psi"]
    large = distribution_drift(cur, base, DriftThresholds(0.05, 0.1, 0.1, 0.25, psi_epsilon=1e-2))["psi"]
    assert small > large


def test_linf_is_largest_share_change():
    cur, base = {"Action": 20, "Drama": 50, "Horror": 30}, {"Action": 40, "Drama": 45, "Horror": 15}
    genres = ["Action", "Drama", "Horror"]
    d = distribution_drift(cur, base, T)
    assert d["linf"] == pytest.approx(np.max(np.abs(shares(cur, genres) - shares(base, genres))))
    assert d["linf"] == pytest.approx(max(abs(r["change"]) for r in d["per_genre"].values()))


def test_new_and_vanished_genres_warn_even_when_tiny():
    base = {"Drama": 100_000, "Comedy": 100_000, "Western": 1}
    cur = {"Drama": 100_000, "Comedy": 100_000, "TV Movie": 1}
    d = distribution_drift(cur, base, T)
    assert d["new_genres"] == ["TV Movie"] and d["vanished_genres"] == ["Western"]
    assert d["js_distance"] < T.warn_js and d["psi"] < T.warn_psi  # the distances alone would say ok
    assert d["severity"] == "warn"
    assert "new genres: TV Movie" in d["reasons"] and "vanished genres: Western" in d["reasons"]


def test_per_genre_rows_match_hand_computed_two_proportion_z_test():
    cur, base = {"Action": 120, "Drama": 300, "Horror": 80}, {"Action": 100, "Drama": 380, "Horror": 20}
    nc, nb = sum(cur.values()), sum(base.values())
    d = distribution_drift(cur, base, T)
    assert list(d["per_genre"]) == ["Action", "Drama", "Horror"]
    for g, row in d["per_genre"].items():
        assert row["current_count"] == cur[g] and row["baseline_count"] == base[g]
        assert row["current_share"] == pytest.approx(cur[g] / nc)
        assert row["baseline_share"] == pytest.approx(base[g] / nb)
        assert row["change"] == pytest.approx(cur[g] / nc - base[g] / nb)
        p = ref_z_p(cur[g], nc, base[g], nb)
        assert row["p_value"] == pytest.approx(p, rel=1e-9, abs=1e-300)
        assert row["significant"] == (p < T.p_value)
    assert d["per_genre"]["Horror"]["significant"]  # 16% vs 4% on 500 each is far past 0.001
    assert not d["per_genre"]["Action"]["significant"]


def test_chi2_matches_hand_statistic_and_equals_z_test_for_two_genres():
    cur, base = {"A": 30, "B": 50, "C": 20}, {"A": 50, "B": 30, "C": 40}
    d = distribution_drift(cur, base, T)
    assert d["chi2"]["statistic"] == pytest.approx(ref_chi2_stat([30, 50, 20], [50, 30, 40]))
    assert d["chi2"]["dof"] == 2
    two = distribution_drift({"A": 30, "B": 70}, {"A": 45, "B": 55}, T)
    assert two["chi2"]["p_value"] == pytest.approx(two["per_genre"]["A"]["p_value"])


def test_zero_in_both_genres_are_ignored():
    cur, base = {"Action": 10, "Drama": 30}, {"Action": 20, "Drama": 20}
    padded = distribution_drift({**cur, "War": 0}, {**base, "War": 0, "Western": 0}, T)
    assert padded == distribution_drift(cur, base, T)
    assert "War" not in padded["per_genre"]


def test_single_bin_identical_has_undefined_tests_as_none():
    d = distribution_drift({"Drama": 5}, {"Drama": 9}, T)
    assert d["chi2"] == {"statistic": None, "dof": 0, "p_value": None}
    assert d["per_genre"]["Drama"]["p_value"] is None and d["per_genre"]["Drama"]["z"] is None
    assert d["severity"] == "ok"
    json.dumps(d, allow_nan=False)


@pytest.mark.parametrize(
    ("cur", "base"),
    [
        ({"A": -1, "B": 3}, {"A": 1}),
        ({"A": 1.5}, {"A": 1}),
        ({"A": 0}, {"A": 1}),
        ({}, {}),
        ({"A": True}, {"A": 1}),
    ],
)
def test_bad_counts_are_rejected(cur, base):
    with pytest.raises(ValueError):
        distribution_drift(cur, base, T)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"warn_js": 0.2, "alert_js": 0.1, "warn_psi": 0.1, "alert_psi": 0.25},
        {"warn_js": 0.05, "alert_js": 0.1, "warn_psi": -0.1, "alert_psi": 0.25},
        {"warn_js": 0.05, "alert_js": 0.1, "warn_psi": 0.1, "alert_psi": 0.25, "psi_epsilon": 0},
        {"warn_js": 0.05, "alert_js": 0.1, "warn_psi": 0.1, "alert_psi": 0.25, "p_value": 1},
    ],
)
def test_inconsistent_thresholds_are_rejected(kwargs):
    with pytest.raises(ValueError):
        DriftThresholds(**kwargs)


def test_thresholds_from_settings(tmp_path):
    s = Settings(
        home=tmp_path,
        drift_warn_js=0.01,
        drift_alert_js=0.02,
        drift_warn_psi=0.03,
        drift_alert_psi=0.04,
        drift_psi_epsilon=1e-5,
    )
    t = DriftThresholds.from_settings(s)
    assert (t.warn_js, t.alert_js, t.warn_psi, t.alert_psi, t.psi_epsilon) == (0.01, 0.02, 0.03, 0.04, 1e-5)
    assert t.p_value == DriftThresholds(0, 0, 0, 0).p_value


def test_severity_rank_orders_and_rejects_unknown():
    assert severity_rank("ok") < severity_rank("warn") < severity_rank("alert")
    with pytest.raises(ValueError):
        severity_rank("critical")


# --- drift_report / render_text -----------------------------------------------------------------------------


def test_report_takes_worst_view_and_round_trips_as_strict_json():
    base = summary({"Drama": 500, "Comedy": 400, "Horror": 100}, {"Drama": 400, "Comedy": 300, "Horror": 300})
    cur = summary({"Drama": 500, "Comedy": 400, "Horror": 100}, {"Drama": 700, "Comedy": 250, "Horror": 50})
    r = drift_report(cur, base, T, snapshot_id="snap-2", baseline_id="snap-1")
    assert (r["snapshot_id"], r["baseline_id"]) == ("snap-2", "snap-1")
    assert r["raw"]["severity"] == "ok" and r["collapsed"]["severity"] == "alert"
    assert r["severity"] == "alert"
    assert r["reasons"] and all(x.startswith("collapsed: ") for x in r["reasons"])
    assert r["movies"] == {"current": 1000, "baseline": 1000, "change": 0, "relative_change": 0.0}
    assert r["thresholds"]["alert_js"] == T.alert_js and r["thresholds"]["p_value"] == T.p_value
    assert json.loads(json.dumps(r, allow_nan=False)) == r


def test_report_movies_change_and_undefined_relative_change():
    grown = drift_report(
        summary({"Drama": 150}), summary({"Drama": 100}), T, snapshot_id="b", baseline_id="a"
    )
    assert grown["movies"]["change"] == 50 and grown["movies"]["relative_change"] == pytest.approx(0.5)
    base = {"raw": {"Drama": 1}, "collapsed": {"Drama": 1}, "movies": 0}
    r = drift_report(summary({"Drama": 3}), base, T, snapshot_id="b", baseline_id="a")
    assert r["movies"]["relative_change"] is None
    json.dumps(r, allow_nan=False)


def test_report_requires_all_summary_fields():
    with pytest.raises(ValueError, match="movies"):
        drift_report(
            {"raw": {"A": 1}, "collapsed": {"A": 1}}, summary({"A": 1}), T, snapshot_id="b", baseline_id="a"
        )


def test_render_text_lists_every_genre_and_headline():
    base = summary({"Drama": 500, "Comedy": 500})
    cur = summary({"Drama": 800, "Comedy": 150, "Western": 50})
    r = drift_report(cur, base, T, snapshot_id="snap-9", baseline_id="snap-8")
    text = render_text(r)
    assert "snap-9" in text and "snap-8" in text and "ALERT" in text
    for genre in ("Drama", "Comedy", "Western"):
        assert sum(line.startswith(genre) for line in text.splitlines()) == 2  # once per view
    assert "new genres: Western" in text
    single = render_text(
        drift_report(summary({"A": 2}), summary({"A": 4}), T, snapshot_id="x", baseline_id="y")
    )
    assert "chi2 p -" in single


# --- properties ---------------------------------------------------------------------------------------------

GENRE_NAMES = ["Action", "Comedy", "Drama", "Horror", "War"]
counts_st = st.dictionaries(st.sampled_from(GENRE_NAMES), st.integers(0, 10_000), min_size=1).filter(
    lambda d: sum(d.values()) > 0
)


@settings(max_examples=60, deadline=None)
@given(counts_st, counts_st)
def test_distances_non_negative_bounded_and_js_symmetric(a, b):
    ab, ba = distribution_drift(a, b, T), distribution_drift(b, a, T)
    for d in (ab, ba):
        assert 0 <= d["js_distance"] <= 1
        assert d["psi"] >= 0 and 0 <= d["linf"] <= 1
        assert math.isfinite(d["psi"])
    assert ab["js_distance"] == pytest.approx(ba["js_distance"], abs=1e-12)
    assert ab["psi"] == pytest.approx(ba["psi"], rel=1e-9, abs=1e-12)  # PSI is symmetric too
    json.dumps(ab, allow_nan=False)


@settings(max_examples=60, deadline=None)
@given(counts_st, counts_st, st.integers(2, 50))
def test_scaling_both_vectors_leaves_shares_and_distances_unchanged(a, b, k):
    d = distribution_drift(a, b, T)
    s = distribution_drift({g: k * n for g, n in a.items()}, {g: k * n for g, n in b.items()}, T)
    for key in ("js_distance", "psi", "linf"):
        assert s[key] == pytest.approx(d[key], rel=1e-9, abs=1e-12)
    for g, row in d["per_genre"].items():
        assert s["per_genre"][g]["current_share"] == pytest.approx(row["current_share"])
        assert s["per_genre"][g]["baseline_share"] == pytest.approx(row["baseline_share"])


thr = st.floats(0, 1, allow_nan=False)


@settings(max_examples=60, deadline=None)
@given(counts_st, counts_st, st.lists(thr, min_size=4, max_size=4), st.lists(thr, min_size=4, max_size=4))
def test_severity_is_monotone_in_thresholds(a, b, lo, bump):
    """Raising every threshold can never raise the severity."""
    w_js, a_js, w_psi, a_psi = lo[0], lo[0] + lo[1], lo[2], lo[2] + lo[3]
    low = DriftThresholds(w_js, a_js, w_psi, a_psi)
    high = DriftThresholds(
        w_js + bump[0], a_js + bump[0] + bump[1], w_psi + bump[2], a_psi + bump[2] + bump[3]
    )
    s_low = distribution_drift(a, b, low)["severity"]
    s_high = distribution_drift(a, b, high)["severity"]
    assert severity_rank(s_high) <= severity_rank(s_low)

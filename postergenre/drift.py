"""Genre-distribution drift between two dataset snapshots, as pure functions.

A retrain is only comparable with the previous one if the label distribution it learnt from is similar, so
every snapshot is compared with a baseline on two views: ``raw`` (one count per genre assignment, a movie with
three genres counts three times) and ``collapsed`` (one count per movie, its least common genre, as the
training set uses). Severity comes from effect sizes (Jensen-Shannon distance and PSI), never from p-values:
with hundreds of thousands of movies any shift is "significant", so the tests are reported for context only.

Conventions, chosen so a report reads the same whatever produced the counts:

- Genres are the union of both mappings; a missing genre counts 0. A genre that is 0 in *both* carries no
  information and is dropped everywhere, so listing zeros or omitting them gives the same report.
- Jensen-Shannon *distance* (square root of the divergence), base 2, so it lies in [0, 1].
- PSI = sum((c - b) * ln(c / b)) over shares clipped below at ``psi_epsilon`` and renormalised to sum to 1, so
  a genre that is empty on one side gives a large but finite term.
- Thresholds fire when a value is greater than or equal to them.
- Every number in the output is a plain ``float``/``int``; undefined values (a test with a single category, a
  proportion test where the genre is all or none of both samples) are ``None``, never NaN.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.spatial.distance import jensenshannon
from scipy.stats import chi2_contingency, norm

SEVERITIES: tuple[str, ...] = ("ok", "warn", "alert")
VIEWS: tuple[str, ...] = ("raw", "collapsed")


@dataclass(frozen=True)
class DriftThresholds:
    """Severity thresholds: JS distance (base 2) and PSI, plus the PSI epsilon and per-genre test level."""

    warn_js: float
    alert_js: float
    warn_psi: float
    alert_psi: float
    psi_epsilon: float = 1e-4
    p_value: float = 0.001

    def __post_init__(self) -> None:
        if not 0 <= self.warn_js <= self.alert_js:
            raise ValueError(f"need 0 <= warn_js <= alert_js, got {self.warn_js}, {self.alert_js}")
        if not 0 <= self.warn_psi <= self.alert_psi:
            raise ValueError(f"need 0 <= warn_psi <= alert_psi, got {self.warn_psi}, {self.alert_psi}")
        if not 0 < self.psi_epsilon < 1:
            raise ValueError(f"psi_epsilon must be in (0, 1), got {self.psi_epsilon}")
        if not 0 < self.p_value < 1:
            raise ValueError(f"p_value must be in (0, 1), got {self.p_value}")

    @classmethod
    def from_settings(cls, settings: Any) -> DriftThresholds:
        """Thresholds from ``postergenre.config.Settings`` (its ``drift_*`` fields)."""
        return cls(
            warn_js=settings.drift_warn_js,
            alert_js=settings.drift_alert_js,
            warn_psi=settings.drift_warn_psi,
            alert_psi=settings.drift_alert_psi,
            psi_epsilon=settings.drift_psi_epsilon,
        )


def severity_rank(severity: str) -> int:
    """Order of a severity name: ok < warn < alert."""
    try:
        return SEVERITIES.index(severity)
    except ValueError:
        raise ValueError(f"unknown severity {severity!r}; expected one of {SEVERITIES}") from None


def _worst(severities: list[str]) -> str:
    return max(severities, key=severity_rank)


def _finite(x: float) -> float | None:
    """A plain float, or None where the value is undefined (NaN/inf), so reports stay strict JSON."""
    x = float(x)
    return x if math.isfinite(x) else None


def _count(genre: str, value: Any) -> int:
    if isinstance(value, bool) or int(value) != value or value < 0:
        raise ValueError(f"count for {genre!r} must be a non-negative integer, got {value!r}")
    return int(value)


def _aligned(
    current: Mapping[str, int], baseline: Mapping[str, int]
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Genres seen in either mapping (sorted) and both count vectors over them; all-zero genres dropped."""
    cur = {g: _count(g, v) for g, v in current.items()}
    base = {g: _count(g, v) for g, v in baseline.items()}
    genres = sorted(g for g in cur.keys() | base.keys() if cur.get(g, 0) or base.get(g, 0))
    c = np.array([cur.get(g, 0) for g in genres], dtype=np.int64)
    b = np.array([base.get(g, 0) for g in genres], dtype=np.int64)
    if c.sum() == 0 or b.sum() == 0:
        raise ValueError("drift is undefined for an empty distribution (a snapshot has no genre counts)")
    return genres, c, b


def _psi(c_share: np.ndarray, b_share: np.ndarray, epsilon: float) -> float:
    c = np.maximum(c_share, epsilon)
    b = np.maximum(b_share, epsilon)
    c, b = c / c.sum(), b / b.sum()
    return float(np.sum((c - b) * np.log(c / b)))


def _chi2(c: np.ndarray, b: np.ndarray) -> dict[str, Any]:
    """Chi-square test of homogeneity on the 2xK table (no Yates correction, so a 2x2 equals the z-test)."""
    if len(c) < 2:  # zero-in-both columns are already gone; one category leaves nothing to test
        return {"statistic": None, "dof": 0, "p_value": None}
    res = chi2_contingency(np.vstack([c, b]), correction=False)
    return {"statistic": _finite(res.statistic), "dof": int(res.dof), "p_value": _finite(res.pvalue)}


def _two_proportion_z(x1: int, n1: int, x2: int, n2: int) -> tuple[float | None, float | None]:
    """Pooled two-proportion z statistic and two-sided p-value; None when the pooled share is 0 or 1."""
    pooled = (x1 + x2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return None, None
    z = (x1 / n1 - x2 / n2) / se
    return z, float(2 * norm.sf(abs(z)))


def distribution_drift(
    current: Mapping[str, int], baseline: Mapping[str, int], thresholds: DriftThresholds
) -> dict[str, Any]:
    """Drift of one pair of genre count vectors: distances, tests, per-genre changes and a severity.

    Raises ValueError on negative or non-integer counts, or when either side has no counts at all.
    """
    genres, c, b = _aligned(current, baseline)
    nc, nb = int(c.sum()), int(b.sum())
    c_share, b_share = c / nc, b / nb

    js = min(1.0, max(0.0, float(jensenshannon(c_share, b_share, base=2))))
    psi = _psi(c_share, b_share, thresholds.psi_epsilon)
    linf = float(np.max(np.abs(c_share - b_share)))

    per_genre: dict[str, dict[str, Any]] = {}
    for i, genre in enumerate(genres):
        z, p = _two_proportion_z(int(c[i]), nc, int(b[i]), nb)
        per_genre[genre] = {
            "baseline_count": int(b[i]),
            "current_count": int(c[i]),
            "baseline_share": float(b_share[i]),
            "current_share": float(c_share[i]),
            "change": float(c_share[i] - b_share[i]),
            "z": z,
            "p_value": p,
            "significant": p is not None and p < thresholds.p_value,
        }
    new = [g for g, row in per_genre.items() if row["baseline_count"] == 0]
    vanished = [g for g, row in per_genre.items() if row["current_count"] == 0]

    severity, reasons = _severity(js, psi, new, vanished, thresholds)
    return {
        "current_total": nc,
        "baseline_total": nb,
        "js_distance": js,
        "psi": psi,
        "linf": linf,
        "chi2": _chi2(c, b),
        "per_genre": per_genre,
        "new_genres": new,
        "vanished_genres": vanished,
        "severity": severity,
        "reasons": reasons,
    }


def _severity(
    js: float, psi: float, new: list[str], vanished: list[str], t: DriftThresholds
) -> tuple[str, list[str]]:
    """Alert if JS or PSI reaches its alert threshold; warn if either reaches warn or a genre (dis)appears."""
    levels, reasons = ["ok"], []
    for name, value, warn, alert in (
        ("js", js, t.warn_js, t.alert_js),
        ("psi", psi, t.warn_psi, t.alert_psi),
    ):
        if value >= alert:
            levels.append("alert")
            reasons.append(f"{name} {value:.4g} >= alert {alert:g}")
        elif value >= warn:
            levels.append("warn")
            reasons.append(f"{name} {value:.4g} >= warn {warn:g}")
    for label, names in (("new", new), ("vanished", vanished)):
        if names:
            levels.append("warn")
            reasons.append(f"{label} genres: {', '.join(names)}")
    return _worst(levels), reasons


def drift_report(
    current: Mapping[str, Any],
    baseline: Mapping[str, Any],
    thresholds: DriftThresholds,
    *,
    snapshot_id: str,
    baseline_id: str,
) -> dict[str, Any]:
    """Raw and collapsed drift of a snapshot against a baseline, as strict-JSON-serialisable data.

    ``current`` and ``baseline`` are the manifests' genre summaries:
    ``{"raw": {genre: rows}, "collapsed": {genre: movies}, "movies": int}``.
    """
    for name, summary in (("current", current), ("baseline", baseline)):
        missing = [k for k in ("raw", "collapsed", "movies") if k not in summary]
        if missing:
            raise ValueError(f"{name} genre summary lacks {', '.join(missing)}")
    views = {v: distribution_drift(current[v], baseline[v], thresholds) for v in VIEWS}
    mc, mb = _count("movies", current["movies"]), _count("movies", baseline["movies"])
    return {
        "snapshot_id": snapshot_id,
        "baseline_id": baseline_id,
        **views,
        "movies": {
            "current": mc,
            "baseline": mb,
            "change": mc - mb,
            "relative_change": (mc - mb) / mb if mb else None,
        },
        "severity": _worst([views[v]["severity"] for v in VIEWS]),
        "reasons": [f"{v}: {r}" for v in VIEWS for r in views[v]["reasons"]],
        "thresholds": {k: float(x) for k, x in asdict(thresholds).items()},
    }


def _fmt_p(p: float | None) -> str:
    return "-" if p is None else f"{p:.2g}"


def render_text(report: Mapping[str, Any]) -> str:
    """A short plain-text summary of a drift report for the CLI: headline, then one table per view."""
    m = report["movies"]
    rel = "" if m["relative_change"] is None else f" ({m['relative_change']:+.1%})"
    lines = [
        f"drift {report['snapshot_id']} vs {report['baseline_id']}: {report['severity'].upper()}",
        f"movies {m['baseline']} -> {m['current']}{rel}",
    ]
    lines += [f"  {r}" for r in report.get("reasons", [])]
    for view in VIEWS:
        d = report[view]
        lines += [
            "",
            f"[{view}] severity {d['severity']}  JS {d['js_distance']:.4f}  PSI {d['psi']:.4f}  "
            f"Linf {d['linf']:.4f}  chi2 p {_fmt_p(d['chi2']['p_value'])}",
            f"{'genre':<17}{'baseline':>9}{'current':>9}{'change':>10}{'p':>9}",
        ]
        for genre, row in d["per_genre"].items():
            mark = "*" if row["significant"] else ""
            lines.append(
                f"{genre:<17}{row['baseline_share']:>9.2%}{row['current_share']:>9.2%}"
                f"{row['change'] * 100:>+7.2f}pp{_fmt_p(row['p_value']):>8}{mark}"
            )
    lines.append("")
    lines.append("shares of the view's total; change in percentage points; * = significant per-genre change")
    return "\n".join(lines)

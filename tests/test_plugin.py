"""The monitoring app the Airflow plugin mounts: JSON data, HTML pages, empty states and Airflow login.

The app is built directly (no api-server) over a home populated by the real pipeline: two synthetic snapshots
ingested, their drift computed, a fake model version registered and promoted, a run report written. Requests
carry a JWT made by the configured simple auth manager, as the Airflow UI's cookie or an API client would.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from fastapi.testclient import TestClient
from markupsafe import escape

from postergenre import registry
from postergenre.config import Settings, get_settings
from postergenre.evaluation import (
    binary_metrics,
    f1_comparison_table,
    multiclass_metrics,
    ova_ensemble_metrics,
    render_markdown,
)
from postergenre.genres import GENRES
from postergenre.snapshots import load_manifest
from postergenre.steps.drift import compute_drift
from postergenre.steps.ingest import ingest_snapshot
from postergenre.storage import open_store
from postergenre.synth import generate_snapshot
from postergenre.ui.app import create_app
from postergenre.ui.charts import Threshold, line_chart_svg
from postergenre.ui.render import cell, records, render, rows, utc_minute

SNAPSHOTS = ("2026-01-05", "2026-02-02")
CNN_METRICS = {"test": {"macro_f1": 0.4213, "accuracy": 0.5321}, "val": {"macro_f1": 0.4}}
XSS = "<script>alert(1)</script>"
REPORT_MD = """## Table 1: single CNN over the splits

| Metric | train | test |
|---|---|---|
| Macro F1 | 0.612 | **0.421** |
"""


def _token(role: str | None) -> str:
    from airflow.api_fastapi.app import create_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    return create_auth_manager().generate_jwt(SimpleAuthManagerUser(username="watcher", role=role))


@pytest.fixture(scope="module")
def token(airflow_db) -> str:
    """A viewer's JWT: the least role that may see the Airflow UI (token checks read Airflow's DB)."""
    return _token("viewer")


def populate(settings: Settings) -> dict:
    """Two ingested snapshots with drift, a promoted genre-cnn, an unpromoted member, a run report."""
    src = settings.home / "sources"
    for seed, snapshot_id in enumerate(SNAPSHOTS):
        generate_snapshot(src / snapshot_id, movies=40, seed=seed)
        ingest_snapshot(str(src / snapshot_id), snapshot_id=snapshot_id, settings=settings)
    drift = compute_drift(SNAPSHOTS[1], settings=settings)
    reg = open_store(settings.registry_url)
    decision = {"promote": True, "reason": "promoted: no champion; test decision"}
    cnn = registry.register_version(
        reg, "genre-cnn", files={"model.keras": b"fake cnn"}, metrics=CNN_METRICS,
        lineage={"run_id": "x", "snapshot_id": SNAPSHOTS[1]}, decision=decision,
    )  # fmt: skip
    registry.promote(reg, "genre-cnn", cnn["version"], actor="test", reason=decision["reason"])
    member = registry.register_version(
        reg, "genre-ova/Western", files={"model.keras": b"fake member"},
        metrics={"test": {"f1": 0.25, "accuracy": 0.9}}, lineage={"run_id": "x"},
    )  # fmt: skip
    store = open_store(settings.store_url)
    store.put_json(
        "runs/x/report.json",
        {
            "classes": list(GENRES),
            "cnn": {"train": {"loss": 0.9, "macro_f1": 0.612}, **CNN_METRICS},
            "ova_members": {"Western": {"f1": 0.25, "accuracy": 0.9}, XSS: {"f1": 0.5}},
            "decisions": {"genre-cnn": decision, "genre-ova/western": {"promote": False, "reason": XSS}},
        },
    )
    store.put_bytes("runs/x/report.md", REPORT_MD.encode())
    return {"drift": drift, "cnn": cnn, "member": member}


@pytest.fixture(scope="module")
def world(tmp_path_factory, token):
    settings = Settings(home=tmp_path_factory.mktemp("plugin-home"))
    facts = populate(settings)
    client = TestClient(create_app(settings), headers={"Authorization": f"Bearer {token}"})
    return settings, facts, client


@pytest.fixture
def empty_client(tmp_path, token) -> TestClient:
    app = create_app(Settings(home=tmp_path / "fresh"))
    return TestClient(app, headers={"Authorization": f"Bearer {token}"})


# ------------------------------------------------------------------------------------------------ auth


@pytest.mark.parametrize("path", ["/", "/api/snapshots", "/api/drift", "/api/models", "/api/runs/latest",
                                  "/models/genre-cnn", "/runs/x"])  # fmt: skip
def test_anonymous_request_is_refused(world, path):
    settings, _, client = world
    anonymous = TestClient(create_app(settings))
    refused = anonymous.get(path)
    assert refused.status_code == 401
    assert "genre-cnn" not in refused.text and "Drama" not in refused.text
    assert client.get(path).status_code == 200


def test_bad_token_and_role_without_permission_are_refused(world):
    settings, _, _ = world
    app = create_app(settings)
    forged = TestClient(app, headers={"Authorization": "Bearer not-a-jwt"}).get("/api/models")
    assert forged.status_code in (401, 403)
    no_role = TestClient(app, headers={"Authorization": f"Bearer {_token(None)}"}).get("/api/models")
    assert no_role.status_code == 403


def test_ui_cookie_logs_in_and_browsers_get_a_login_link(world, token):
    settings, _, _ = world
    app = create_app(settings)
    browser = TestClient(app)
    page = browser.get("/", headers={"Accept": "text/html"})
    assert page.status_code == 401
    assert "auth/login" in page.text
    browser.cookies.set("_token", token)
    assert browser.get("/", headers={"Accept": "text/html"}).status_code == 200


# ------------------------------------------------------------------------------------------------ JSON


def test_snapshot_api_gives_genre_counts_and_shares_over_time(world):
    settings, _, client = world
    data = client.get("/api/snapshots").json()
    assert [s["id"] for s in data["snapshots"]] == list(SNAPSHOTS)
    assert data["genres"] == list(GENRES)
    store = open_store(settings.store_url)
    for i, snapshot_id in enumerate(SNAPSHOTS):
        manifest = load_manifest(store, snapshot_id)
        for view in ("raw", "collapsed"):
            assert {g: data["counts"][view][g][i] for g in GENRES} == manifest["genres"][view]
            assert sum(data["shares"][view][g][i] for g in GENRES) == pytest.approx(1.0)


def test_drift_api_gives_metrics_and_thresholds(world):
    settings, facts, client = world
    data = client.get("/api/drift").json()
    assert data["thresholds"] == {
        "js": {"warn": settings.drift_warn_js, "alert": settings.drift_alert_js},
        "psi": {"warn": settings.drift_warn_psi, "alert": settings.drift_alert_psi},
    }
    [report] = data["reports"]
    drift = facts["drift"]
    assert (report["snapshot_id"], report["baseline_id"]) == (SNAPSHOTS[1], SNAPSHOTS[0])
    assert report["kind"] == "previous"
    assert report["severity"] == drift["severity"]
    assert report["js_raw"] == pytest.approx(drift["raw"]["js_distance"])
    assert report["psi_collapsed"] == pytest.approx(drift["collapsed"]["psi"])
    assert len(report["top_changes"]) == 5


def test_models_api_gives_champions_metrics_and_alias_log(world):
    _, facts, client = world
    data = client.get("/api/models").json()
    by_name = {m["name"]: m for m in data["models"]}
    assert set(by_name) == {"genre-cnn", "genre-ova/western"}
    champion = by_name["genre-cnn"]["champion"]
    assert champion["version"] == facts["cnn"]["version"]
    assert champion["metrics"]["macro_f1"] == CNN_METRICS["test"]["macro_f1"]
    assert champion["metrics"]["accuracy"] == CNN_METRICS["test"]["accuracy"]
    assert by_name["genre-ova/western"]["champion"] is None
    assert by_name["genre-ova/western"]["latest_version"]["version"] == facts["member"]["version"]
    [entry] = data["alias_log"]
    assert (entry["model"], entry["action"]) == ("genre-cnn", "promote")
    assert entry["to_version"] == champion["version"]


def test_model_detail_api_gives_versions_decisions_and_history(world):
    _, facts, client = world
    data = client.get("/api/models/genre-cnn").json()
    [version] = data["versions"]
    assert version["version"] == facts["cnn"]["version"]
    assert version["decision"]["promote"] is True
    assert version["lineage"]["snapshot_id"] == SNAPSHOTS[1]
    assert [e["to_version"] for e in data["history"]] == [version["version"]]
    assert client.get("/api/models/genre-ova/Western").json()["name"] == "genre-ova/western"
    assert client.get("/api/models/no-such-model").status_code == 404


def test_run_api_gives_the_latest_report(world):
    _, _, client = world
    assert [r["run_id"] for r in client.get("/api/runs").json()["runs"]] == ["x"]
    latest = client.get("/api/runs/latest").json()
    assert latest["run_id"] == "x"
    assert latest["markdown"] == REPORT_MD
    assert latest["report"]["decisions"]["genre-cnn"]["promote"] is True
    assert client.get("/api/runs/nope").status_code == 404
    assert client.get("/api/runs/..%2Fsecrets").status_code == 404


# ------------------------------------------------------------------------------------------------ HTML


def test_dashboard_shows_genres_drift_champions_and_run(world):
    _, facts, client = world
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    text = page.text
    for genre in GENRES:
        assert f">{genre}<" in text
    assert text.count("<svg") == 4  # raw and collapsed shares, JS and PSI
    assert "warn 0.05" in text and "alert 0.25" in text
    assert "raw vs previous" in text and "raw vs champion" not in text  # no champion-baseline drift yet
    assert facts["cnn"]["version"] in text and "0.421" in text and "0.532" in text
    assert 'href="models/genre-cnn"' in text
    assert facts["drift"]["severity"] in text
    assert "<h3>Table 1: single CNN over the splits</h3>" in text
    # Table 1 from report.json, missing metrics as dashes; no per-class data, so no Table 2
    assert (
        '<tr><td>test</td><td>–</td><td class="num">0.532</td><td>–</td><td>–</td><td class="num">0.421</td>'
        in text
    )
    assert "<h3>Table 3: OvA binary members (test)</h3>" in text and "Table 2" not in text
    assert text.index("<tr><td>train</td>") < text.index("<tr><td>val</td>") < text.index("<tr><td>test</td>")
    assert "<script>" not in text and "&lt;script&gt;" in text


def test_model_and_run_pages_render(world):
    _, facts, client = world
    model = client.get("/models/genre-cnn").text
    assert facts["cnn"]["version"] in model and "test decision" in model and "★ champion" in model
    member = client.get("/models/genre-ova/western").text
    assert "Never promoted." in member and "binary F1" in member
    assert 'href="../../"' in member  # relative link back to the overview, whatever the prefix
    run = client.get("/runs/x").text
    assert "Run report: x" in run and "<table>" in run


def test_empty_home_renders_every_section(empty_client):
    page = empty_client.get("/")
    assert page.status_code == 200
    for empty in ("No model registered", "No drift report", "No snapshot ingested", "No run report"):
        assert empty in page.text
    assert empty_client.get("/api/snapshots").json()["snapshots"] == []
    assert empty_client.get("/api/drift").json()["reports"] == []
    assert empty_client.get("/api/models").json() == {"models": [], "alias_log": []}
    assert empty_client.get("/api/runs/latest").status_code == 404


def test_unreachable_source_fails_its_section_only(world, token):
    settings, _, _ = world
    broken = settings.model_copy(update={"registry_url": "file://elsewhere/registry"})
    client = TestClient(create_app(broken), headers={"Authorization": f"Bearer {token}"})
    page = client.get("/")
    assert page.status_code == 200
    assert "Unavailable" in page.text and "Drama" in page.text
    assert client.get("/api/models").status_code == 503


def test_unreadable_run_report_fails_its_section_only(tmp_path, token):
    settings = Settings(home=tmp_path / "home")
    open_store(settings.store_url).put_json("runs/odd/report.json", ["not", "a", "report"])
    client = TestClient(create_app(settings), headers={"Authorization": f"Bearer {token}"})
    page = client.get("/")
    assert page.status_code == 200
    assert "Unavailable: UnreadableRecord" in page.text and "No snapshot ingested" in page.text
    run_page = client.get("/runs/odd")
    assert run_page.status_code == 200 and "Unavailable: UnreadableRecord" in run_page.text
    assert client.get("/api/runs/odd").status_code == 503


def test_plugin_mounts_the_app_with_login_and_adds_a_navigation_link(airflow_db, settings, token):
    from airflow import plugins_manager

    apps, _ = plugins_manager.get_fastapi_plugins()
    [ours] = [a for a in apps if a["url_prefix"] == "/postergenre"]
    get_settings.cache_clear()  # the plugin's app reads the process settings: the fixture's empty home
    try:
        assert TestClient(ours["app"]).get("/api/drift").status_code == 401
        logged_in = TestClient(ours["app"], headers={"Authorization": f"Bearer {token}"})
        assert logged_in.get("/api/drift").json()["reports"] == []
    finally:
        get_settings.cache_clear()
    views, _ = plugins_manager._get_ui_plugins()
    [view] = [v for v in views if v.get("url_route") == "postergenre"]
    assert view["destination"] == "nav" and view["href"] == "postergenre/"


# ------------------------------------------------------------------------------------------------ run report


def full_report() -> dict:
    """A report.json as the retrain run writes it, from the evaluation functions over random predictions."""
    rng = np.random.default_rng(0)
    k = len(GENRES)

    def split(n: int) -> tuple[np.ndarray, dict]:
        y = rng.integers(0, k, n)
        p = rng.random((n, k)) + np.eye(k)[y]
        return y, multiclass_metrics(y, p / p.sum(axis=1, keepdims=True), GENRES)

    cnn = {name: split(200)[1] for name in ("train", "val")}
    y_test, cnn["test"] = split(300)
    ova_p = rng.random((300, k))
    ova = ova_ensemble_metrics(y_test, ova_p, GENRES, {g: 0.5 for g in GENRES})
    return {
        "classes": list(GENRES),
        "cnn": cnn,
        "ova_members": {g: binary_metrics(y_test == j, ova_p[:, j]) for j, g in enumerate(GENRES)},
        "ova": ova,
        "f1_comparison": f1_comparison_table(cnn["test"], ova, GENRES),
        "decisions": {"genre-cnn": {"promote": False, "reason": "not better"}},
        "fine_tune": {"fine_tuned": True, "top_blocks": 2, "learning_rate": 1e-5, "val_loss_before": 2.5,
                      "val_loss": 2.25, "epochs_run": 3},
        "generated_at": "2026-02-02T10:00:00+00:00",
    }  # fmt: skip


def test_run_report_renders_every_section_of_report_json():
    report = full_report()
    page = render("run.html", run={"run_id": "r1", "report": report, "markdown": ""}, runs=[], root="")
    headings = [line[3:] for line in render_markdown(report).splitlines() if line.startswith("## ")]
    assert len(headings) == 5  # Tables 1-4 and the fine-tune stage: the same sections as report.md
    for heading in headings:
        assert f"<h3>{escape(heading)}</h3>" in page
    assert "<h3>OvA multi-label" in page
    for genre in GENRES:  # one row in each of Tables 2, 3 and 4
        assert page.count(f"<tr><td>{escape(genre)}</td>") == 3
    assert "<tfoot><tr><td>Macro</td>" in page
    assert f'<td class="num">{report["cnn"]["test"]["macro_f1"]:.3f}</td>' in page
    fine_tune = ('<td class="num">1e-05</td>', '<td class="num">2.2500</td>', "<td>yes</td>")
    assert all(snippet in page for snippet in fine_tune)
    assert "keep champion" in page and "not better" in page


def test_run_report_shows_each_model_beside_its_probe_and_multilabel_on_true_genres():
    from postergenre.multilabel import multilabel_scores
    from postergenre.steps.report import probe_markdown, probe_table

    report = full_report()
    rng = np.random.default_rng(1)
    y_true, y_pred = rng.integers(0, 2, (50, len(GENRES))), rng.integers(0, 2, (50, len(GENRES)))
    margins = {
        "genre-cnn": {"macro_f1": 0.31, "head_macro_f1": 0.27, "below_with_confidence": True,
                      "bootstrap": {"delta": -0.04, "ci_low": -0.07, "ci_high": -0.01}},
        "genre-ova/western": None,  # decided before probes existed
    }
    report.update(
        cnn_probe=report["cnn"],
        ova_member_probes=report["ova_members"],
        probe_table=probe_table(margins),
        ova_truth={"all": {"set": "test split + movies in no split", **multilabel_scores(y_true, y_pred, GENRES)},
                   "test_split": {"set": "test split", **multilabel_scores(y_true[:20], y_pred[:20], GENRES)}},
    )
    report["ova"]["argmax_calibrated"] = report["ova"]["argmax"]
    assert "vector scaling" not in render("run.html", run={"run_id": "r1", "report": report, "markdown": ""},
                                          runs=[], root="")  # reports from before it: no empty table
    report["ova"]["argmax_vector_scaling"] = {**report["ova"]["argmax"], "macro_f1": 0.4321}
    page = render("run.html", run={"run_id": "r1", "report": report, "markdown": ""}, runs=[], root="")
    assert "vector scaling on val" in page and '<td class="num">0.432</td>' in page
    for heading in ("Keras heads against their linear probes", "the CNN&#39;s linear probe",
                    "each member&#39;s linear probe", "members calibrated on val", "true genre lists"):
        assert heading in page, heading
    assert '<td class="num">-0.0400</td>' in page and "<td>genre-cnn</td>" in page
    assert "genre-ova/western" not in page.split("linear probes")[1].split("</table>")[0]
    for genre in GENRES:  # Tables 2, 3, 3's probe and 4
        assert page.count(f"<tr><td>{escape(genre)}</td>") == 4
    markdown = probe_markdown(report)
    assert "| genre-cnn | 0.2700 | 0.3100 | -0.0400 | [-0.0700, -0.0100] |" in markdown
    assert "| test split | 20 |" in markdown


BROKEN_REPORT = {
    "classes": None,
    "generated_at": 20260101,
    "cnn": {"test": {"macro_f1": "high", "accuracy": None, "per_class": ["a", "list"]}, "val": None},
    "ova_members": ["Western"],
    "ova": "not computed",
    "f1_comparison": {"genre": "Drama"},
    "fine_tune": {"fine_tuned": None, "learning_rate": "fast"},
    "decisions": {
        "genre-cnn": {"promote": True, "reason": None},
        "genre-ova/drama": None,
        "genre-ova/western": {"promote": "maybe", "reason": 7},
    },
}


def test_null_and_mistyped_stored_fields_still_render(tmp_path, token):
    settings = Settings(home=tmp_path / "home")
    open_store(settings.store_url).put_json("runs/odd/report.json", BROKEN_REPORT)
    reg = open_store(settings.registry_url)
    null_decision = {"promote": True, "reason": None}
    version = registry.register_version(
        reg, "genre-cnn", files={"model.keras": b"m"}, metrics={"test": {"macro_f1": None, "accuracy": "n/a"}},
        lineage={"run_id": None}, decision=null_decision,
    )["version"]  # fmt: skip
    registry.promote(reg, "genre-cnn", version, actor=None, reason=None, decision=null_decision)
    client = TestClient(create_app(settings), headers={"Authorization": f"Bearer {token}"})
    pages = {path: client.get(path) for path in ("/", "/runs/odd", "/models/genre-cnn")}
    for path, page in pages.items():
        assert page.status_code == 200, path
        assert "Unavailable" not in page.text, path
    run = pages["/runs/odd"].text
    assert "Run report: odd" in run and "<h3>Table 1: single CNN over the splits</h3>" in run
    assert '<span class="badge promote">promote</span></td><td></td>' in run  # reason: null
    drama = '<a href="../models/genre-ova/drama">genre-ova/drama</a></td><td><span class="badge reject">'
    assert drama in run  # a decision that is not an object: not a promotion
    assert "<td>7</td>" in run and "<td>high</td>" in run
    model = pages["/models/genre-cnn"].text
    assert version in model and "★ champion" in model
    for path in ("/api/runs", "/api/runs/latest", "/api/models", "/api/models/genre-cnn"):
        assert client.get(path).status_code == 200, path


def test_stored_markup_is_escaped_on_every_page(tmp_path, token):
    settings = Settings(home=tmp_path / "home")
    reg = open_store(settings.registry_url)
    version = registry.register_version(
        reg, "genre-cnn", files={"model.keras": b"m"}, metrics={"test": {"macro_f1": XSS}},
        lineage={"run_id": XSS, "snapshot_id": XSS}, decision={"promote": XSS, "reason": XSS},
    )["version"]  # fmt: skip
    registry.promote(reg, "genre-cnn", version, actor=XSS, reason=XSS)
    report = {"classes": [XSS], "cnn": {XSS: {"loss": XSS}}, "ova_members": {XSS: {"f1": XSS}},
              "decisions": {XSS: {"reason": XSS}}, "fine_tune": {"top_blocks": XSS}, "generated_at": XSS}  # fmt: skip
    open_store(settings.store_url).put_json("runs/r1/report.json", report)
    client = TestClient(create_app(settings), headers={"Authorization": f"Bearer {token}"})
    for path in ("/", "/models/genre-cnn", "/runs/r1"):
        page = client.get(path)
        assert page.status_code == 200 and "Unavailable" not in page.text, path
        assert "<script>" not in page.text and "&lt;script&gt;" in page.text, path
    missing = client.get("/runs/%3Cscript%3E", headers={"Accept": "text/html"})
    assert missing.status_code == 404 and "<script>" not in missing.text


# ------------------------------------------------------------------------------------------------ helpers


def test_cells_and_records_tolerate_any_stored_value():
    assert [cell(v) for v in (None, True, 3, 0.12345, "x", [1])] == ["–", "yes", "3", "0.123", "x", "[1]"]
    assert cell(0.123, ".1%") == "12.3%" and cell(1e-5, "g") == "1e-05"
    by_name = {"b": {"f1": 1}, "a": 2, "c": {}}
    assert records(by_name, "genre", order=["c", "missing"]) == [{"genre": "c"}, {"f1": 1, "genre": "b"},
                                                                 {"genre": "a"}]  # fmt: skip
    assert records(["not", "a", "mapping"], "genre") == []
    assert rows({"genre": "Drama"}) == [] and rows([{"a": 1}, 2]) == [{"a": 1}]
    assert utc_minute("2026-01-05T10:15:30+01:00") == "2026-01-05 09:15 UTC"
    assert utc_minute("soon") == "soon" and utc_minute(None) == "–"


def test_line_chart_draws_series_gaps_single_points_and_thresholds():
    svg = line_chart_svg(["a", "b", "c"], {"s": [0.1, None, 0.3]}, title="T", colours={"s": "#123456"},
                         thresholds=[Threshold("alert", 0.25, "#e53e3e")])  # fmt: skip
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert svg.count("<circle") == 2 and "<polyline" not in svg  # the gap splits the line
    assert "stroke-dasharray" in svg and "alert 0.25" in svg
    joined = line_chart_svg(["a", "b"], {"s": [0.1, 0.2]}, title="T", colours={})
    assert len(re.findall(r"<polyline", joined)) == 1
    single = line_chart_svg(["only"], {"s": [0.5]}, title="T", colours={}, percent=True)
    assert single.count("<circle") == 1 and "50%" in single

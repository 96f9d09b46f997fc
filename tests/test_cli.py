import json

import pytest
from typer.testing import CliRunner

from postergenre.cli import app
from postergenre.config import get_settings


@pytest.fixture
def cli(settings):
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


def _json(result):
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_help_everywhere(cli):
    commands = ["synth", "ingest", "prepare", "drift", "snapshots", "tune", "train", "evaluate", "promote", "run",
                "predict", "demo", "db upgrade", "registry list", "registry show", "registry history",
                "registry rollback"]
    for command in commands:
        result = cli.invoke(app, [*command.split(), "--help"])
        assert result.exit_code == 0 and "--json" in result.output, command


def test_data_plane_commands_compose_as_json(cli, tmp_path):
    for n, seed in ((1, 300), (2, 550)):  # s2 (550 movies: 10 Westerns) is big enough to prepare
        synth = _json(cli.invoke(app, ["synth", str(tmp_path / f"e{n}"), "--movies", str(seed), "--seed", str(n),
                                       "--json"]))
        assert synth["movies"] == seed
        ingested = _json(cli.invoke(app, ["ingest", str(tmp_path / f"e{n}"), "--snapshot", f"s{n}", "--json"]))
        assert ingested["status"] == "published" and ingested["quarantined"] == 0
    prepared = _json(cli.invoke(app, ["prepare", "s2", "--seed", "7", "--json"]))
    assert prepared["seed"] == 7 and prepared["movies"] > 0
    drift = _json(cli.invoke(app, ["drift", "s2", "--json"]))
    assert drift["baseline_id"] == "s1" and drift["severity"] in ("ok", "warn", "alert")
    assert _json(cli.invoke(app, ["snapshots", "--json"]))["snapshots"] == ["s1", "s2"]
    text = cli.invoke(app, ["drift", "s2"])
    assert text.exit_code == 0 and "JS" in text.stdout


def test_known_failures_are_one_line_and_exit_3(cli, tmp_path):
    result = cli.invoke(app, ["ingest", str(tmp_path / "missing"), "--json"])
    assert result.exit_code == 3
    assert json.loads(result.stdout)["type"] == "SourceError" and json.loads(result.stdout)["exit_code"] == 3
    assert result.stderr.strip().count("\n") == 0 and result.stderr.startswith("error: ")
    result = cli.invoke(app, ["prepare", "never-ingested"])
    assert result.exit_code == 3 and "not published" in result.stderr
    result = cli.invoke(app, ["registry", "show", "genre-cnn"])
    assert result.exit_code == 3 and "no champion" in result.stderr


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--log-level", "BOGUS", "registry", "list"], "'BOGUS' is not one of"),
        (["predict", "--top-k", "abc", "p.jpg"], "Invalid value for '--top-k'"),
        (["predict", "--top-k", "0", "p.jpg"], "greater than or equal to 1"),
        (["predict", "--model", "genre-xyz", "p.jpg"], "Invalid value for '--model'"),
        (["predict"], "Missing argument 'posters'"),
        (["registry", "history", "genre-cnn", "--at", "last tuesday"], "not an ISO 8601 time"),
        (["registry", "rollback", "genre-cnn"], "Missing option '--reason'"),
        (["no-such-command"], "No such command"),
        (["synth", "out", "--no-such-option"], "No such option"),
    ],
)
def test_usage_errors_exit_2_with_one_line_and_a_json_error(cli, args, says):
    for as_json in (False, True):
        result = cli.invoke(app, [*args, "--json"] if as_json else args)
        assert result.exit_code == 2, result.output
        (line,) = result.stderr.splitlines()
        assert line.startswith("error: ") and says in line and "--help" in line
        if as_json:
            doc = json.loads(result.stdout)
            assert says in doc["error"] and doc["exit_code"] == 2 and doc["type"]
        else:
            assert result.stdout == ""


def test_log_levels_are_the_logging_modules(cli):
    from typing import get_args

    from postergenre.cli import LogLevel
    from postergenre.log import LEVELS

    assert get_args(LogLevel) == LEVELS
    assert cli.invoke(app, ["--log-level", "debug", "registry", "list", "--json"]).exit_code == 0
    assert cli.invoke(app, ["registry"]).exit_code == 2  # a bare group still shows its help


def test_synth_onto_an_existing_file_is_a_clear_error(cli, tmp_path):
    (tmp_path / "taken").write_text("mine")
    result = cli.invoke(app, ["synth", str(tmp_path / "taken"), "--movies", "10"])
    assert result.exit_code == 3 and "exists and is a file, not a folder" in result.stderr
    assert (tmp_path / "taken").read_text() == "mine"


def test_predict_on_a_directory_says_so(cli, tmp_path):
    result = cli.invoke(app, ["predict", str(tmp_path), "--json"])
    assert result.exit_code == 3 and "is a directory" in result.stderr
    doc = json.loads(result.stdout)
    assert doc["type"] == "PosterError" and doc["failed"] == 1
    assert "is a directory" in doc["predictions"][0]["error"]


def test_predict_without_champion_is_a_clear_error(cli, tmp_path):
    poster = tmp_path / "p.jpg"
    from PIL import Image

    Image.new("RGB", (20, 30)).save(poster)
    result = cli.invoke(app, ["predict", str(poster)])
    assert result.exit_code == 3 and "no genre-cnn champion" in result.stderr


@pytest.mark.slow
def test_model_plane_commands_tune_with_hyperband_and_fine_tune(cli, tmp_path):
    _json(cli.invoke(app, ["synth", str(tmp_path / "e"), "--movies", "800", "--seed", "3", "--json"]))
    _json(cli.invoke(app, ["ingest", str(tmp_path / "e"), "--snapshot", "s", "--json"]))
    _json(cli.invoke(app, ["prepare", "s", "--json"]))
    tuned = _json(cli.invoke(app, ["tune", "s", "--run-id", "r1", "--tuning", "hyperband", "--trials", "2",
                                   "--max-epochs", "3", "--backbone", "tiny", "--weights", "none", "--image-size",
                                   "32", "--fine-tune", "--fine-tune-blocks", "1", "--fine-tune-lr", "0.001",
                                   "--json"]))
    # R = 3, eta = 3: two configurations for 1 epoch, then the better one for 3.
    assert [t["trial_id"] for t in tuned["trials"]] == ["t000", "t001", "t002"]
    assert tuned["trials"][2]["hp"] == min(tuned["trials"][:2], key=lambda t: t["val_loss"])["hp"]
    trained = _json(cli.invoke(app, ["train", "r1", "--target", "genre-cnn", "--json"]))
    outcome = trained["fine_tune"]
    assert outcome["top_blocks"] == 1 and outcome["fine_tuned"] == (
        outcome["val_cross_entropy"] < outcome["val_cross_entropy_before"]
    )


@pytest.mark.slow
def test_the_readme_demo_ends_with_a_champion_and_a_prediction(cli, settings):
    """``make demo`` at toy size (Lite0 with its offline ImageNet weights, small posters): the whole job on the
    embedded default. A random backbone would not do: its CNN stays at chance and is rightly never promoted."""
    demo = ["demo", "--backbone", "lite0", "--movies", "900", "--image-size", "96", "--json"]
    steps = _json(cli.invoke(app, demo))
    assert steps["ingest demo-2"]["quarantined"] > 0  # the second export carries bad input on purpose
    retrain = steps["retrain"]
    assert len(retrain["promoted"]) + len(retrain["kept"]) == retrain["trained"] > 1  # the CNN and OvA members
    assert "genre-cnn" in retrain["promoted"]  # predict serves the champion
    prediction = steps["predict"]["predictions"][0]
    assert len(prediction["genres"]) == 3 and steps["predict"]["version"] == retrain["run_id"]
    repeat = _json(cli.invoke(app, demo))  # a rerun is idempotent: nothing re-uploaded, trained or promoted
    assert repeat["ingest demo-2"]["status"] == "unchanged"
    assert repeat["retrain"]["promoted"] == []  # each model met itself as champion: nothing to gain, kept
    assert repeat["predict"]["version"] == retrain["run_id"]


def test_registry_rollback_twice_goes_further_back_and_a_noop_says_so(cli, settings):
    from postergenre import registry
    from postergenre.storage import open_store

    store = open_store(settings.registry_url)
    for v in ("v1", "v2", "v3"):
        registry.register_version(store, "genre-cnn", files={"model.keras": v.encode()}, metrics={}, lineage={},
                                  version=v)  # fmt: skip
        registry.promote(store, "genre-cnn", v, actor="t", reason="r")
    rollback = ["registry", "rollback", "genre-cnn", "--reason", "bad", "--json"]
    assert _json(cli.invoke(app, rollback))["version"] == "v2"
    assert _json(cli.invoke(app, rollback))["version"] == "v1"  # not back to v3
    refused = cli.invoke(app, rollback)
    assert refused.exit_code == 3 and "no version to roll back to from v1" in refused.stderr
    again = _json(cli.invoke(app, [*rollback[:-1], "--to", "v1", "--json"]))
    assert again["changed"] is False and "already the champion" in again["note"]
    history = _json(cli.invoke(app, ["registry", "history", "genre-cnn", "--json"]))["history"]
    assert [(e["from_version"], e["to_version"]) for e in history[3:]] == [("v3", "v2"), ("v2", "v1")]

"""RunSettings: one declaration of a run's knobs. The CLI options and the DAG's trigger-form Params derive from
it and accept and refuse exactly the same values; validation happens before anything is written."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from postergenre.run_settings import (
    FORM_FIELDS,
    RunSettings,
    RunSettingsError,
    available_backbones,
    cli_flag,
    field_schema,
    validate_run_settings,
)


def _candidates(name: str) -> list:
    """Values around every constraint of a field, read from its schema (so a new bound is tested too)."""
    schema = field_schema(name)
    kind = schema.get("type")
    if "enum" in schema:
        return [*schema["enum"], "bogus", schema["enum"][0].upper()]
    if kind == "integer":
        lo, hi = schema.get("minimum", -5), schema.get("maximum", 10_000)
        return sorted({lo - 1, lo, lo + 1, hi - 1, hi, hi + 1, 0, -1})
    if kind == "number":
        lo = schema.get("exclusiveMinimum", schema.get("minimum", -1.0))
        hi = schema.get("maximum", 1.0)
        return [lo, lo + 1e-9, hi / 2, hi, hi * 1.5, -1.0]
    if name == "weights":
        return ["imagenet", "none", "s3://b/k/x.weights.h5", "/w/r.weights.h5", "file:///w/r.weights.h5",
                "resnet50.h5", "", "image net", "x.weights.h5 "]
    if kind == "boolean":
        return [True, False]
    raise AssertionError(f"no candidates for {name} ({schema})")


CASES = [(name, value) for name in FORM_FIELDS for value in _candidates(name)]


def _param_accepts(params, name, value) -> bool:
    from airflow.exceptions import ParamValidationError

    try:
        params[name].resolve(value)
    except ParamValidationError:
        return False
    return True


def _cli_args(name: str, value) -> list[str]:
    flag = cli_flag(name)
    if isinstance(value, bool):
        return [flag if value else f"--no-{flag.removeprefix('--')}"]
    return [flag, str(value)]


@pytest.fixture(scope="module")
def params():
    from postergenre.dag_support import run_params

    return run_params()


@pytest.fixture
def cli(tmp_path, monkeypatch):
    monkeypatch.setenv("POSTERGENRE_HOME", str(tmp_path / "home"))
    from postergenre.config import get_settings

    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


def test_every_field_is_in_the_form_and_on_the_cli(params):
    from postergenre.cli import app

    assert set(params) == set(FORM_FIELDS)
    result = CliRunner().invoke(app, ["run", "--help"], env={"COLUMNS": "200"})
    for name in FORM_FIELDS:
        assert cli_flag(name) in result.output, name
        assert params[name].description and params[name].schema["title"], name


@pytest.mark.parametrize(("name", "value"), CASES, ids=[f"{n}={v!r}" for n, v in CASES])
def test_cli_and_trigger_form_accept_and_refuse_the_same_values(params, cli, name, value):
    """Per field, as the form checks them (cross-field rules are the gate's: see the next test)."""
    from postergenre.cli import app

    other = {"weights": "none"} if name == "backbone" and value == "tiny" else {}
    form_ok = _param_accepts(params, name, value)
    args = ["run", "--snapshot", "never-ingested", *_cli_args(name, value), "--json"]
    for other_name, other_value in other.items():
        args += _cli_args(other_name, other_value)
    result = cli.invoke(app, args)
    refused_as_usage = result.exit_code == 2 and "Invalid value" in result.output
    # Accepted values get past option parsing and fail later, on the missing snapshot (a runtime failure).
    assert refused_as_usage != form_ok, (result.exit_code, result.output)
    if form_ok:
        assert "never-ingested" in json.loads(result.stdout)["error"]


def test_validation_refuses_a_backbone_without_the_weights_it_asks_for():
    with pytest.raises(RunSettingsError, match="'tiny' has no ImageNet weights"):
        validate_run_settings({"snapshot_id": "s", "backbone": "tiny", "weights": "imagenet"})
    assert validate_run_settings({"snapshot_id": "s", "backbone": "tiny", "weights": "none"}).backbone == "tiny"


def test_the_test_backbone_is_offered_only_with_the_test_flag(monkeypatch):
    monkeypatch.delenv("POSTERGENRE_TEST_BACKBONES", raising=False)
    assert "tiny" not in available_backbones()
    with pytest.raises(RunSettingsError, match="unknown backbone 'tiny'"):
        validate_run_settings({"snapshot_id": "s", "backbone": "tiny", "weights": "none"})
    monkeypatch.setenv("POSTERGENRE_TEST_BACKBONES", "1")
    assert "tiny" in available_backbones()


def test_errors_are_one_line_naming_each_field_as_the_caller_spells_it():
    with pytest.raises(RunSettingsError) as caught:
        validate_run_settings({"snapshot_id": "s", "n_trials": 0, "image_size": 5}, label=cli_flag)
    message = str(caught.value)
    assert "\n" not in message and "--trials:" in message and "--image-size:" in message


def test_stored_settings_of_an_older_version_load_with_todays_defaults():
    stored = {"snapshot_id": "s", "seed": 3, "backbone": "resnet50", "retired_knob": 1}
    settings = RunSettings.from_stored(stored)
    assert settings.seed == 3 and settings.fine_tune is False and settings.batch_size == 128
    assert RunSettings.from_stored(settings.to_dict()) == settings


def test_a_refused_cli_value_writes_nothing(cli, tmp_path):
    from postergenre.cli import app

    result = cli.invoke(app, ["tune", "snap", "--run-id", "r", "--backbone", "efficientnetv2", "--json"])
    assert result.exit_code == 2 and "unknown backbone 'efficientnetv2'" in result.output
    assert not (tmp_path / "home").exists()


def test_seed_defaults_to_the_process_setting(monkeypatch):
    from postergenre.config import get_settings

    monkeypatch.setenv("POSTERGENRE_SEED", "7")
    get_settings.cache_clear()
    try:
        assert RunSettings(snapshot_id="s").seed == 7
    finally:
        get_settings.cache_clear()

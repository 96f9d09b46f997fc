"""Model selection: the report's search space, seeded trial plans (random, Hyperband), trials, selection."""

import json
import math
from collections import Counter

import numpy as np
import pytest

from postergenre.run_settings import DEFAULT_TRIALS, RunSettings
from postergenre.storage import open_store
from postergenre.training import HeadData
from postergenre.tuning import (
    HP_DEFAULTS,
    fit_kwargs,
    hyperband_schedule,
    plan_trials,
    run_trial,
    search_space,
    select_best,
    survivors,
    with_defaults,
)

UNITS = list(range(64, 513, 64))


def test_report_search_space_is_the_reports():
    space = {p.name: p for p in search_space("report").space}
    assert sorted(space) == ["dropout", "units"]
    assert list(space["units"].values) == UNITS
    assert set(space["dropout"].values) == {True, False}


def test_random_plan_is_reproducible_from_its_seed():
    plan = plan_trials(6, seed=7)
    assert plan == plan_trials(6, seed=7)
    assert plan != plan_trials(6, seed=8)
    assert [t["trial_id"] for t in plan] == [f"t{i:03d}" for i in range(6)]
    for trial in plan:
        assert trial["epochs"] == 20 and trial["hp"]["units"] in UNITS
        assert isinstance(trial["hp"]["dropout"], bool)


def test_random_plan_covers_the_space_before_repeating():
    plan = plan_trials(32, seed=1, max_epochs=4, space="report")
    points = [(t["hp"]["units"], t["hp"]["dropout"]) for t in plan]
    assert len(set(points[:16])) == 16 and len(set(points[16:])) == 16
    assert set(Counter(points).values()) == {2}


def test_hyperband_schedule_matches_li_et_al_table_1():
    # R = 81, eta = 3: the worked example of Li et al. (2018), Table 1, as (configurations, epochs) per round.
    expected = [
        [(81, 1), (27, 3), (9, 9), (3, 27), (1, 81)],
        [(34, 3), (11, 9), (3, 27), (1, 81)],
        [(15, 9), (5, 27), (1, 81)],
        [(8, 27), (2, 81)],
        [(5, 81)],
    ]
    got = [[(r["configs"], r["epochs"]) for r in bracket] for bracket in hyperband_schedule(81, 3)]
    assert got == expected
    assert hyperband_schedule(2, 3) == [[{"configs": 1, "epochs": 2}]]  # R < eta: plain random search


def test_hyperband_plan_budgets():
    n, factor, max_epochs = 20, 3, 20
    plan = plan_trials(n, seed=5, method="hyperband", max_epochs=max_epochs, factor=factor)
    assert plan == plan_trials(n, seed=5, method="hyperband", max_epochs=max_epochs, factor=factor)
    assert [t["trial_id"] for t in plan] == [f"t{i:03d}" for i in range(len(plan))]
    first = [t for t in plan if t["round"] == 0]
    assert len(first) == n and all(t["hp"] is not None for t in first)
    assert all(t["hp"] is None for t in plan if t["round"] > 0)
    schedule = hyperband_schedule(max_epochs, factor)
    for b in sorted({t["bracket"] for t in plan}):
        rounds = [[t for t in plan if t["bracket"] == b and t["round"] == i] for i in range(len(plan))]
        rounds = [r for r in rounds if r]
        budgets = [r[0]["epochs"] for r in rounds]
        assert all(len({t["epochs"] for t in r}) == 1 for r in rounds)
        assert budgets == [spec["epochs"] for spec in schedule[b % len(schedule)]]
        assert budgets[-1] == max_epochs and budgets == sorted(budgets)
        sizes = [len(r) for r in rounds]
        assert sizes == [max(1, sizes[0] // factor**i) for i in range(len(sizes))]
    # Brackets repeat once the first Hyperband iteration's configurations are used up.
    assert sum(r[0]["configs"] for r in schedule) < n and len({t["bracket"] for t in plan}) > len(schedule)


def test_survivors_fill_the_next_round_with_the_best_of_this_one():
    plan = plan_trials(9, seed=2, method="hyperband", max_epochs=9, factor=3)
    first = [t for t in plan if t["bracket"] == 0 and t["round"] == 0]
    results = [
        {"trial_id": t["trial_id"], "hp": t["hp"], "val_loss": float(9 - i)} for i, t in enumerate(first)
    ]
    kept = survivors(plan, results, bracket=0, round_index=0)
    assert len(kept) == len(first) // 3
    assert [t["hp"] for t in kept] == [t["hp"] for t in first[::-1][: len(kept)]]
    assert all(t["round"] == 1 and t["epochs"] == 3 for t in kept)
    with pytest.raises(ValueError, match="not finished"):
        survivors(plan, results[1:], bracket=0, round_index=0)
    with pytest.raises(ValueError, match="no hyperparameters"):
        run_trial(plan[len(first)], None, seed=0, batch_size=8)


def test_select_best_lowest_loss_then_lowest_id():
    results = [
        {"trial_id": "t002", "val_loss": 0.5},
        {"trial_id": "t001", "val_loss": 0.5},
        {"trial_id": "t000", "val_loss": math.nan},
        {"trial_id": "t003", "val_loss": 0.7},
    ]
    assert select_best(results)["trial_id"] == "t001"
    assert select_best(results[2:])["trial_id"] == "t003"  # NaN is never best
    with pytest.raises(ValueError):
        select_best([])


@pytest.fixture(scope="module")
def data() -> HeadData:
    rng = np.random.default_rng(0)
    centers = rng.normal(0, 1, (3, 16))

    def blobs(n):
        cls = rng.integers(0, 3, n)
        return (centers[cls] + rng.normal(0, 1, (n, 16))).astype(np.float32), np.eye(3, dtype=np.float32)[cls]

    return HeadData(*blobs(192), *blobs(64))


def test_regularised_space_keeps_the_reports_and_adds_regularisers():
    space = {p.name: list(p.values) for p in search_space().space}
    assert sorted(space) == sorted(
        [
            "units",
            "dropout",
            "first_units",
            "dropout_rate",
            "input_dropout",
            "l2",
            "learning_rate",
            "label_smoothing",
            "batch_size",
            "normalize",
        ]
    )
    assert space["units"] == UNITS and set(space["dropout"]) == {True, False}
    assert 0.0 in space["l2"] and 0.0 in space["input_dropout"] and 0.0 in space["label_smoothing"]
    assert set(space["normalize"]) == {True, False} and 256 in space["first_units"]  # 256: the report's head
    assert all(0 < r < 1 for r in space["dropout_rate"]) and min(space["learning_rate"]) < 1e-3 < max(
        space["learning_rate"]
    )
    with pytest.raises(ValueError, match="search space"):
        search_space("bayesian")


def test_default_plan_samples_every_new_key_as_json_values():
    plan = plan_trials(DEFAULT_TRIALS, seed=3)
    assert plan == plan_trials(DEFAULT_TRIALS, seed=3) and len(plan) == DEFAULT_TRIALS >= 16
    assert RunSettings(snapshot_id="s").n_trials == DEFAULT_TRIALS  # what a run gets unless told otherwise
    keys = set(search_space().get_config()["values"])
    for trial in plan:
        assert set(trial["hp"]) == keys
        assert json.loads(json.dumps(trial["hp"])) == trial["hp"]  # stored and read back unchanged
        assert type(trial["hp"]["units"]) is int and type(trial["hp"]["batch_size"]) is int
        assert type(trial["hp"]["l2"]) is float and type(trial["hp"]["normalize"]) is bool
    assert len({tuple(sorted(t["hp"].items())) for t in plan}) == len(plan)  # distinct points
    for key in ("l2", "learning_rate", "batch_size", "input_dropout"):
        assert len({t["hp"][key] for t in plan}) > 2  # the search actually varies it


def test_old_hyperparameters_load_with_the_reports_defaults():
    old = {"units": 192, "dropout": True}  # a trial or best.json stored before the regularised space
    assert with_defaults(old) == {**HP_DEFAULTS, **old}
    kwargs = fit_kwargs(old, batch_size=128)
    assert kwargs["batch_size"] == 128 and kwargs["normalize"] is False and kwargs["l2"] == 0.0
    assert (
        kwargs["learning_rate"] == 1e-3 and kwargs["dropout_rate"] == 0.5 and kwargs["input_dropout"] == 0.0
    )
    assert fit_kwargs({**old, "batch_size": 32}, batch_size=128)["batch_size"] == 32


def test_defaults_are_the_reports_head_and_training():
    """HP_DEFAULTS (kept free of TensorFlow for the orchestration steps) match fit_head's own defaults."""
    import inspect

    from postergenre.training import fit_head

    params = inspect.signature(fit_head).parameters
    assert {k: params[k].default for k in HP_DEFAULTS} == HP_DEFAULTS


def test_an_old_hp_dict_trains_the_same_head_as_before(data):
    """A stored dict of units and dropout trains exactly the report's head (no Normalization, same weights)."""
    from postergenre.training import fit_head

    old = {"units": 64, "dropout": True}
    a, _ = fit_head(data, kind="multiclass", max_epochs=2, seed=0, **fit_kwargs(old, batch_size=32))
    b, _ = fit_head(data, kind="multiclass", units=64, dropout=True, max_epochs=2, batch_size=32, seed=0)
    assert "normalize" not in [layer.name for layer in a.layers]
    for x, y in zip(a.get_weights(), b.get_weights(), strict=True):
        np.testing.assert_array_equal(x, y)


def test_select_best_prefers_cross_entropy_over_a_penalised_loss():
    results = [
        {"trial_id": "t000", "val_loss": 0.9, "val_cross_entropy": 0.6},  # L2 penalty inflates its loss
        {"trial_id": "t001", "val_loss": 0.7, "val_cross_entropy": 0.7},
        {"trial_id": "t002", "val_loss": 0.65},  # stored before val_cross_entropy: its loss was that
    ]
    assert select_best(results)["trial_id"] == "t000"
    assert select_best(results[1:])["trial_id"] == "t002"


def test_run_trial_trains_stores_and_skips_when_stored(data, tmp_path, monkeypatch):
    store = open_store(f"file://{tmp_path}")
    trial = {"trial_id": "t004", "hp": {"units": 64, "dropout": True}, "epochs": 3}
    result = run_trial(trial, data, seed=0, batch_size=32, store=store, result_key="tuning/t004.json")
    assert set(result) == {
        "trial_id",
        "hp",
        "val_loss",
        "val_cross_entropy",
        "val_accuracy",
        "epochs_run",
        "best_epoch",
        "seconds",
    }
    assert result["trial_id"] == "t004" and result["hp"] == trial["hp"]
    assert math.isfinite(result["val_loss"]) and 0 <= result["val_accuracy"] <= 1
    assert 1 <= result["epochs_run"] <= 3 and 0 <= result["best_epoch"] < result["epochs_run"]
    assert store.get_json("tuning/t004.json") == result

    def no_training(*args, **kwargs):
        raise AssertionError("a stored trial must not train again")

    from postergenre import training

    monkeypatch.setattr(training, "fit_head", no_training)
    assert run_trial(trial, data, seed=0, batch_size=32, store=store, result_key="tuning/t004.json") == result
    with pytest.raises(ValueError, match="together"):
        run_trial(trial, data, seed=0, batch_size=32, store=store)


def test_run_trial_passes_every_hyperparameter_to_fit_head(data, monkeypatch):
    seen = {}

    def fake_fit_head(data, **kwargs):
        seen.update(kwargs)
        return None, {
            "val_loss": 1.0,
            "val_cross_entropy": 0.9,
            "val_accuracy": 0.5,
            "epochs_run": 1,
            "best_epoch": 0,
        }

    from postergenre import training

    monkeypatch.setattr(training, "fit_head", fake_fit_head)
    hp = plan_trials(1, seed=0)[0]["hp"]
    result = run_trial({"trial_id": "t000", "hp": hp, "epochs": 2}, data, seed=1, batch_size=999)
    assert {k: seen[k] for k in hp} == hp and seen["batch_size"] == hp["batch_size"] != 999
    assert result["val_cross_entropy"] == 0.9 and result["hp"] == hp


def test_orchestration_steps_do_not_load_tensorflow():
    """Hyperband's halving and the selection run as their own Airflow tasks: they must not pay ~15 s of imports."""
    import subprocess
    import sys

    code = (
        "import sys; from postergenre.steps.tune import halving_step, select_step; "
        "from postergenre.tuning import halving_round, select_best, hyperband_schedule; "
        "print(sorted(m for m in ('tensorflow', 'keras', 'keras_tuner') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"

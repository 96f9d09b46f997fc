"""Model selection: the report's search space, seeded trial plans (random, Hyperband), trials, selection."""

import math
from collections import Counter

import numpy as np
import pytest

from postergenre.storage import open_store
from postergenre.training import HeadData
from postergenre.tuning import (
    hyperband_schedule,
    plan_trials,
    run_trial,
    search_space,
    select_best,
    survivors,
)

UNITS = list(range(64, 513, 64))


def test_search_space_is_the_reports():
    space = {p.name: p for p in search_space().space}
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
    points = [(t["hp"]["units"], t["hp"]["dropout"]) for t in plan_trials(32, seed=1, max_epochs=4)]
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


def test_run_trial_trains_stores_and_skips_when_stored(data, tmp_path, monkeypatch):
    store = open_store(f"file://{tmp_path}")
    trial = {"trial_id": "t004", "hp": {"units": 64, "dropout": True}, "epochs": 3}
    result = run_trial(trial, data, seed=0, batch_size=32, store=store, result_key="tuning/t004.json")
    assert set(result) == {
        "trial_id",
        "hp",
        "val_loss",
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


def test_orchestration_steps_do_not_load_tensorflow():
    """Hyperband's halving and the selection run as their own Airflow tasks: they must not pay ~15 s of imports."""
    import subprocess
    import sys

    code = ("import sys; from postergenre.steps.tune import halving_step, select_step; "
            "from postergenre.tuning import halving_round, select_best, hyperband_schedule; "
            "print(sorted(m for m in ('tensorflow', 'keras', 'keras_tuner') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"

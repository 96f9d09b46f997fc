"""Stage ``tune``: plan the trials, train each (one mapped task per trial), Hyperband's halving rounds, select.

Imports no TensorFlow at module level: the halving and select tasks start in seconds.
"""

from __future__ import annotations

from postergenre.config import Settings
from postergenre.steps.context import RunContext, load_run
from postergenre.storage import NotFound


def plan_step(run_id: str, settings: Settings | None = None) -> list[dict]:
    """Sample the run's trials up front (reproducible from the seed); returns round 0, the first fan-out.

    Random search has only round 0. Hyperband's later rounds get their hyperparameters from ``halving_step``.
    """
    from postergenre.tuning import halving_round, plan_trials

    ctx = load_run(run_id, settings)
    cfg = ctx.config
    trials = plan_trials(cfg.n_trials, cfg.seed, method=cfg.tuning, max_epochs=cfg.max_epochs)
    ctx.store.put_json(ctx.layout.plan, trials)
    return halving_round(trials, [], 0)


def _trial_results(ctx: RunContext, trials: list[dict]) -> tuple[list[dict], list[str]]:
    """Stored results of ``trials`` and the ids of those without one."""
    results, missing = [], []
    for trial in trials:
        try:
            results.append(ctx.store.get_json(ctx.layout.trial(trial["trial_id"])))
        except NotFound:
            missing.append(trial["trial_id"])
    return results, missing


def halving_step(run_id: str, round_index: int, settings: Settings | None = None) -> list[dict]:
    """The trials of successive-halving round ``round_index`` (>= 1), each with the hyperparameters kept
    from the previous round of its Hyperband bracket; empty for random search or past the last round."""
    from postergenre.tuning import halving_round, round_of

    if round_index < 1:
        raise ValueError("round 0 is planned by plan_step")
    ctx = load_run(run_id, settings)
    plan = ctx.store.get_json(ctx.layout.plan)
    if not any(round_of(t) == round_index for t in plan):
        return []
    results, missing = _trial_results(ctx, [t for t in plan if round_of(t) == round_index - 1])
    if missing:
        raise RuntimeError(
            f"run {ctx.run_id}: round {round_index - 1} trials {', '.join(missing)} have no result"
        )
    trials = halving_round(plan, results, round_index)
    ctx.store.put_json(ctx.layout.round(round_index), trials)
    return trials


def planned_trials(run_id: str, settings: Settings | None = None) -> int:
    """How many trials the run's search trains in all rounds (plans it when not planned yet)."""
    ctx = load_run(run_id, settings)
    try:
        return len(ctx.store.get_json(ctx.layout.plan))
    except NotFound:
        plan_step(run_id, settings)
        return len(ctx.store.get_json(ctx.layout.plan))


def trial_step(run_id: str, trial: dict, settings: Settings | None = None) -> dict:
    """Train one trial's multi-class head on the cached features; a finished trial is not trained again."""
    from postergenre.tuning import run_trial

    ctx = load_run(run_id, settings)
    return run_trial(
        trial,
        ctx.multiclass_data(),
        kind="multiclass",
        seed=ctx.config.seed,
        batch_size=ctx.config.batch_size,
        store=ctx.store,
        result_key=ctx.layout.trial(trial["trial_id"]),
    )


def run_tuning(run_id: str, settings: Settings | None = None, on_trial=None) -> list[dict]:
    """Every round of the run's search in-process (what the DAG fans out); ``on_trial(result)`` after each."""
    from postergenre.tuning import MAX_ROUNDS

    results = []
    for round_index in range(MAX_ROUNDS):
        trials = (
            plan_step(run_id, settings) if round_index == 0 else halving_step(run_id, round_index, settings)
        )
        for trial in trials:
            results.append(trial_step(run_id, trial, settings))
            if on_trial is not None:
                on_trial(results[-1])
    return results


def select_step(run_id: str, settings: Settings | None = None) -> dict:
    """The best planned trial by validation loss; every planned trial must have finished."""
    from postergenre.tuning import select_best

    ctx = load_run(run_id, settings)
    results, missing = _trial_results(ctx, ctx.store.get_json(ctx.layout.plan))
    if missing:
        raise RuntimeError(f"run {ctx.run_id}: trials {', '.join(missing)} have no result yet")
    best = select_best(results)
    ctx.store.put_json(ctx.layout.best, best)
    return best

"""Model selection for the heads: a regularised search space, trials planned up front, run one by one.

Report, section 2.1: the tuned hyperparameters are the second FC layer's width (64..512, step 64) and whether
the dropout layer is present, chosen with "a few steps of random search"; section 4 names Hyperband as the
refinement once trials can be distributed. That space (``search_space("report")``) has nothing that
regularises the head, and on real posters its tuned heads memorised the training split (train accuracy 0.98,
val 0.13) and lost to a linear probe on their own features. The default space (``"regularised"``) keeps the
report's two hyperparameters and adds the first FC layer's width, the dropout rate, dropout on the input
features, an L2 penalty, the learning rate, label smoothing, the batch size and input standardisation. A trial
on cached features costs seconds, so a run's default is ``run_settings.DEFAULT_TRIALS`` (24) rather than the report's few.
Trials are independent, so the orchestrator (Airflow) fans them out:
``plan_trials`` fixes every trial's hyperparameters and epoch budget from a seed before anything runs,
``run_trial`` trains one (skipping it when its result is already stored, so a re-run only does what is left)
and ``select_best`` picks the winner. keras-tuner provides the search space and its sampling; its own
chief/worker mode is not used.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from postergenre.log import get_logger
from postergenre.storage import NotFound, ObjectStore

if TYPE_CHECKING:  # keras-tuner and Keras load TensorFlow (~15 s): only the steps that train import them
    import keras_tuner

    from postergenre.models import HeadKind
    from postergenre.training import HeadData

log = get_logger(__name__)
METHODS = ("random", "hyperband")
SPACES = ("regularised", "report")
DEFAULT_SPACE = "regularised"
HP_DEFAULTS: dict[str, float | bool] = {
    "first_units": 256,
    "dropout_rate": 0.5,
    "input_dropout": 0.0,
    "l2": 0.0,
    "learning_rate": 1e-3,
    "label_smoothing": 0.0,
    "normalize": False,
}
"""Values of the keys the report's space lacks: the report's head and training (``models``/``training``
defaults), so a stored hyperparameter dict of ``units`` and ``dropout`` alone trains the head it always did.
``batch_size`` has no default here: without it the caller's (the run's) batch size applies."""
MAX_ROUNDS = 4
"""Successive-halving rounds a planned Hyperband bracket may have; the retrain DAG wires this many trial fan-outs."""
_MAX_DRAWS = 1000  # redraws to find an unseen point; missing one of 16 in 1000 draws has probability ~1e-28


def search_space(name: str = DEFAULT_SPACE) -> keras_tuner.HyperParameters:
    """The hyperparameters a trial samples; every one is discrete, so a plan can draw distinct points.

    ``"report"``: ``units`` (width of the second FC layer, 64..512 step 64) and ``dropout`` (the dropout layer
    before the output, on/off). ``"regularised"`` adds ``first_units`` (the first FC layer's width, which
    the report does not give; 256 before), ``dropout_rate`` (when that layer is on),
    ``input_dropout`` (on the features, 0 = none), ``l2`` (penalty on every Dense kernel), ``learning_rate``
    (Adam), ``label_smoothing``, ``batch_size`` and ``normalize`` (the head standardises its input with a
    ``Normalization`` layer adapted on the training features). Choices, not ranges: clean JSON values.
    """
    import keras_tuner

    if name not in SPACES:
        raise ValueError(f"search space must be one of {', '.join(SPACES)}, got {name!r}")
    hp = keras_tuner.HyperParameters()
    hp.Int("units", min_value=64, max_value=512, step=64)
    hp.Boolean("dropout")
    if name == "regularised":
        hp.Choice("first_units", [256, 512, 1024])
        hp.Choice("dropout_rate", [0.2, 0.3, 0.4, 0.5, 0.6, 0.7])
        hp.Choice("input_dropout", [0.0, 0.2, 0.35, 0.5, 0.65])
        hp.Choice("l2", [0.0, 1e-5, 1e-4, 1e-3, 1e-2])
        hp.Choice("learning_rate", [1e-4, 3e-4, 1e-3, 3e-3])
        hp.Choice("label_smoothing", [0.0, 0.05, 0.1, 0.2])
        hp.Choice("batch_size", [32, 64, 128, 256])
        hp.Boolean("normalize")
    return hp


def with_defaults(hp: dict) -> dict:
    """``hp`` with ``HP_DEFAULTS`` for the keys it lacks (a stored dict from the report's space loads as is)."""
    return {**HP_DEFAULTS, **hp}


def fit_kwargs(hp: dict, batch_size: int) -> dict:
    """``training.fit_head``'s hyperparameter keywords for ``hp``; ``batch_size`` unless ``hp`` has its own."""
    full = with_defaults(hp)
    return {**full, "batch_size": int(full.get("batch_size", batch_size))}


def _plain(value: object) -> object:
    """A sampled value as the JSON type a stored trial reads back (keras-tuner may hand out numpy scalars)."""
    if isinstance(value, bool | int | float):
        return value
    return value.item() if hasattr(value, "item") else value


def _space_size(space: keras_tuner.HyperParameters) -> int:
    return math.prod(len(list(p.values)) for p in space.space)


def _sample(space: keras_tuner.HyperParameters, n: int, rng: random.Random) -> list[dict]:
    """``n`` points drawn with keras-tuner's own samplers, no repeats until every point has been drawn."""
    size, seen, points = _space_size(space), set(), []
    for _ in range(n):
        if len(seen) == size:
            seen.clear()  # the space is exhausted: start another round of distinct points
        for _ in range(_MAX_DRAWS):
            point = {p.name: p.random_sample(rng.getrandbits(32)) for p in space.space}
            key = tuple(sorted(point.items()))
            if key not in seen:
                break
        seen.add(key)
        points.append({name: _plain(value) for name, value in point.items()})
    return points


def hyperband_schedule(max_epochs: int, factor: int = 3, max_rounds: int | None = None) -> list[list[dict]]:
    """Hyperband's brackets (Li et al. 2018, Algorithm 1) for a maximum budget ``R = max_epochs``, ``eta = factor``.

    Bracket ``s`` (from ``s_max = floor(log_eta R)`` down to 0) starts ``n = ceil((s_max+1)/(s+1) * eta^s)``
    configurations at ``r = R * eta^-s`` epochs; round ``i`` keeps ``floor(n * eta^-i)`` of them at
    ``r * eta^i`` epochs (rounded up to whole epochs). Returns, per bracket, its rounds as
    ``{"configs": n_i, "epochs": r_i}``. ``max_rounds`` caps ``s_max + 1`` (the longest bracket's rounds).
    """
    if max_epochs < 1 or factor < 2:
        raise ValueError("hyperband needs max_epochs >= 1 and factor >= 2")
    if max_rounds is not None and max_rounds < 1:
        raise ValueError("max_rounds must be >= 1")
    s_max = 0
    while factor ** (s_max + 1) <= max_epochs and (max_rounds is None or s_max + 1 < max_rounds):
        s_max += 1
    brackets = []
    for s in range(s_max, -1, -1):
        n = -(-(s_max + 1) * factor**s // (s + 1))
        brackets.append(
            [{"configs": n // factor**i, "epochs": -(-max_epochs // factor ** (s - i))} for i in range(s + 1)]
        )
    return brackets


def plan_trials(
    n: int,
    seed: int,
    *,
    method: str = "random",
    max_epochs: int = 20,
    factor: int = 3,
    max_rounds: int = MAX_ROUNDS,
    space: str = DEFAULT_SPACE,
) -> list[dict]:
    """Every trial's hyperparameters and epoch budget, fixed up front from ``seed`` (same seed, same plan).

    ``space``: the ``search_space`` the points come from. ``random``: ``n`` trials ``{"trial_id", "hp",
    "epochs": max_epochs}``, distinct points while the space (16 points for ``"report"``) lasts.

    ``hyperband``: ``n`` is the number of configurations sampled. They fill Hyperband's brackets
    (``hyperband_schedule``, at most ``max_rounds`` rounds each) in order, repeating the brackets as further
    Hyperband iterations; the last bracket may be cut short, and then each of its rounds keeps
    ``max(1, m // factor**i)`` of its ``m`` configurations.
    Simplification, to keep every trial an independent task: each round of a bracket is its own set of trials
    (with ``"bracket"`` and ``"round"`` keys and that round's epoch budget) that trains from scratch. Only round
    0 has its hyperparameters; later rounds have ``"hp": None`` until the caller's select step fills them with
    ``survivors`` (or ``halving_round``) from the previous round's results (successive halving done by the
    orchestrator, one fan-out per round).
    """
    if n < 1:
        raise ValueError("n must be >= 1")
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if max_epochs < 1:
        raise ValueError("max_epochs must be >= 1")
    rng = random.Random(seed)
    if method == "random":
        points = _sample(search_space(space), n, rng)
        return [{"trial_id": f"t{i:03d}", "hp": hp, "epochs": max_epochs} for i, hp in enumerate(points)]
    schedule = hyperband_schedule(max_epochs, factor, max_rounds)
    points = iter(_sample(search_space(space), n, rng))
    trials: list[dict] = []
    left, bracket = n, 0
    while left > 0:
        rounds = schedule[bracket % len(schedule)]
        m = min(rounds[0]["configs"], left)
        left -= m
        for i, spec in enumerate(rounds):
            for _ in range(m if i == 0 else max(1, m // factor**i)):
                trials.append(
                    {
                        "trial_id": f"t{len(trials):03d}",
                        "hp": next(points) if i == 0 else None,
                        "epochs": spec["epochs"],
                        "bracket": bracket,
                        "round": i,
                    }
                )
        bracket += 1
    return trials


def _rank(result: dict) -> tuple[float, str]:
    """Lower validation cross-entropy first (NaN or infinite counts as worst), then the lower trial id.

    Cross-entropy, not ``val_loss``: label smoothing and L2 penalties are part of the loss, so two trials' losses
    would not measure the same thing. A result stored before ``val_cross_entropy`` existed ranks by its
    ``val_loss``, which was that cross-entropy.
    """
    loss = float(result.get("val_cross_entropy", result["val_loss"]))
    return (loss if math.isfinite(loss) else math.inf, result["trial_id"])


def select_best(results: Sequence[dict]) -> dict:
    """The result with the lowest validation cross-entropy (``_rank``); ties go to the lower ``trial_id``."""
    if not results:
        raise ValueError("no trial results to select from")
    return min(results, key=_rank)


def survivors(plan: Sequence[dict], results: Sequence[dict], *, bracket: int, round_index: int) -> list[dict]:
    """Hyperband's successive-halving step: round ``round_index + 1`` of ``bracket`` with its hyperparameters.

    The ``k`` trials of the next round take the hyperparameters of the ``k`` best results (``select_best``'s
    order) of round ``round_index``; every trial of that round must have a result.
    """
    this_round = [t for t in plan if t.get("bracket") == bracket and t.get("round") == round_index]
    following = [t for t in plan if t.get("bracket") == bracket and t.get("round") == round_index + 1]
    if not this_round or not following:
        raise ValueError(f"bracket {bracket} has no rounds {round_index} and {round_index + 1}")
    by_id = {r["trial_id"]: r for r in results}
    missing = [t["trial_id"] for t in this_round if t["trial_id"] not in by_id]
    if missing:
        raise ValueError(f"round {round_index} of bracket {bracket} is not finished: {', '.join(missing)}")
    ranked = sorted((by_id[t["trial_id"]] for t in this_round), key=_rank)
    return [{**t, "hp": dict(r["hp"])} for t, r in zip(following, ranked, strict=False)]


def round_of(trial: dict) -> int:
    """The successive-halving round a planned trial belongs to (random-search trials are all round 0)."""
    return int(trial.get("round", 0))


def halving_round(plan: Sequence[dict], results: Sequence[dict], round_index: int) -> list[dict]:
    """Every trial of round ``round_index`` with its hyperparameters, across all brackets.

    Round 0 is planned up front; a later round keeps the best of the previous round of each bracket that has
    one (``survivors``). Empty when no bracket reaches ``round_index`` (always so for random search).
    """
    if round_index == 0:
        return [dict(t) for t in plan if round_of(t) == 0]
    brackets = sorted({t["bracket"] for t in plan if round_of(t) == round_index})
    return [t for b in brackets for t in survivors(plan, results, bracket=b, round_index=round_index - 1)]


def run_trial(
    trial: dict,
    data: HeadData,
    *,
    kind: HeadKind = "multiclass",
    seed: int,
    batch_size: int,
    store: ObjectStore | None = None,
    result_key: str | None = None,
) -> dict:
    """Train one trial's head; returns ``{"trial_id", "hp", "val_loss", "val_cross_entropy", "val_accuracy",
    "epochs_run", "best_epoch", "seconds"}`` (the metrics of the best epoch, whose weights early stopping
    keeps). ``batch_size`` applies when the trial's hyperparameters have none (the report's space).

    With ``store`` and ``result_key``, a result already stored there is returned without training, and a new
    one is stored, so a re-run of the whole search only trains the trials that did not finish.
    """
    if (store is None) != (result_key is None):
        raise ValueError("store and result_key go together")
    if trial.get("hp") is None:
        raise ValueError(
            f"trial {trial['trial_id']} has no hyperparameters yet (halve the previous round first)"
        )
    if store is not None:
        try:
            return store.get_json(result_key)
        except NotFound:
            pass
    from postergenre.training import fit_head

    hp = trial["hp"]
    start = time.perf_counter()
    _, summary = fit_head(
        data, kind=kind, max_epochs=trial["epochs"], seed=seed, **fit_kwargs(hp, batch_size)
    )
    result = {
        "trial_id": trial["trial_id"],
        "hp": dict(hp),
        "val_loss": summary["val_loss"],
        "val_cross_entropy": summary["val_cross_entropy"],
        "val_accuracy": summary["val_accuracy"],
        "epochs_run": summary["epochs_run"],
        "best_epoch": summary["best_epoch"],
        "seconds": round(time.perf_counter() - start, 3),
    }
    log.info("trial finished", **result)
    if store is not None:
        store.put_json(result_key, result)
    return result

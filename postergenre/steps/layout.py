"""Every key of one retrain run under ``runs/<run_id>/`` in the data store: the only place that spells them.

Models are named as in the registry (``genre-cnn``, ``genre-ova/western``), so one model has one name in the
run store and the registry::

    runs/<id>/config.json                       the run's RunSettings
    runs/<id>/features.json                     feature-cache key and per-split objects
    runs/<id>/plan.json                         every planned trial; rounds/<r>.json Hyperband round r's trials
    runs/<id>/trials/<trial_id>.json            one finished trial
    runs/<id>/best.json                         the selected hyperparameters
    runs/<id>/candidates/<model>/...            candidate.json, predictions.npz, model.keras, head.keras,
                                                fine_tune.json
    runs/<id>/checkpoints/<model>/...           per-epoch training checkpoints
    runs/<id>/fine-tune-checkpoints/<model>/... per-epoch fine-tune checkpoints
    runs/<id>/decisions/<model>.json            champion/challenger decision
    runs/<id>/report.json, report.md            the run report
"""

from __future__ import annotations

from dataclasses import dataclass

RUNS_PREFIX = "runs/"


@dataclass(frozen=True)
class RunLayout:
    run_id: str

    @property
    def root(self) -> str:
        return f"{RUNS_PREFIX}{self.run_id}"

    def _key(self, *parts: str) -> str:
        return "/".join((self.root, *parts))

    # run-level
    @property
    def config(self) -> str:
        return self._key("config.json")

    @property
    def features(self) -> str:
        return self._key("features.json")

    @property
    def check_posters(self) -> str:
        """The artefact check's test posters, decoded as serving decodes them (``steps.verify``)."""
        return self._key("check_posters.npz")

    @property
    def plan(self) -> str:
        return self._key("plan.json")

    def round(self, round_index: int) -> str:
        return self._key("rounds", f"{round_index}.json")

    def trial(self, trial_id: str) -> str:
        return self._key("trials", f"{trial_id}.json")

    @property
    def best(self) -> str:
        return self._key("best.json")

    @property
    def report_json(self) -> str:
        return self._key("report.json")

    @property
    def report_md(self) -> str:
        return self._key("report.md")

    # per model (``genre-cnn``, ``genre-ova/<genre>``)
    def candidate_prefix(self, model: str) -> str:
        return self._key("candidates", model)

    def candidate(self, model: str, name: str = "candidate.json") -> str:
        """``candidate.json``, ``predictions.npz``, ``model.keras``, ``head.keras``, ``fine_tune.json``."""
        return self._key("candidates", model, name)

    def checkpoints(self, model: str) -> str:
        return self._key("checkpoints", model)

    def fine_tune_checkpoints(self, model: str) -> str:
        return self._key("fine-tune-checkpoints", model)

    @property
    def decisions_prefix(self) -> str:
        return self._key("decisions") + "/"

    def decision(self, model: str) -> str:
        return self._key("decisions", f"{model}.json")


def run_ids_with_report(keys) -> list[str]:
    """The run ids among store keys (``list_keys(RUNS_PREFIX)``) that have a finished report."""
    suffix = "/report.json"
    return sorted({k[len(RUNS_PREFIX) : -len(suffix)] for k in keys if k.endswith(suffix)} - {""})

"""What one retrain run trains, declared once: the CLI options, the DAG's trigger-form Params and their help are
derived from :class:`RunSettings`, and validation (including backbone/weights compatibility) happens here,
before anything is written.

Light on purpose: DAG files import it at parse time, so it imports neither Keras nor Airflow at module level.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from postergenre.config import get_settings

PRODUCTION_BACKBONES = ("efficientnetv2b0", "resnet50", "lite0")
TEST_BACKBONE = "tiny"
TEST_BACKBONES_ENV = "POSTERGENRE_TEST_BACKBONES"
"""Set to 1 (tests, the demo's dev runs) to offer the small ``tiny`` CNN; production forms never show it."""
TUNING_METHODS = ("random", "hyperband")
DEFAULT_TRIALS = 24
"""Trials a search gets by default. ``bench_quality`` measured 11-16 s (7-11 CPU s) per trial on cached lite0
features of 3,477 training posters, 20 epochs at most, on a busy 2-core machine: 24 trials ~ 5 minutes; the
regularised space needs them (4 trials of it lost to the linear probe, 24 reached it)."""
DEFAULT_OVA_BAGS = 5
"""Heads per OvA member, each on a draw of the report's 70/30 set (``members.py``); 1 is the report's member.
Chosen on val (bench_quality: calibrated-argmax val macro-F1 0.47, 0.49, 0.51, 0.51, 0.51 for 1-5 bags)."""
WEIGHTS_PATTERN = r"^(imagenet|none|\S+\.weights\.h5)$"
# Backbones that have no pretrained weights at all.
_NO_PRETRAINED = {TEST_BACKBONE}


def available_backbones() -> tuple[str, ...]:
    """The backbones a run may ask for here: ``tiny`` only where the test flag is set."""
    flag = os.environ.get(TEST_BACKBONES_ENV, "").strip().lower() in ("1", "true", "yes")
    return (*PRODUCTION_BACKBONES, TEST_BACKBONE) if flag else PRODUCTION_BACKBONES


def _seed_default() -> int:
    return get_settings().seed


class RunSettings(BaseModel):
    """A retrain run's knobs; stored as ``runs/<id>/config.json``."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    snapshot_id: str = Field(description="Published, prepared snapshot to train on.")
    seed: int = Field(
        default_factory=_seed_default,
        description="Seeds the label split, the trial plan and the training (default: POSTERGENRE_SEED).",
    )
    backbone: str = Field(
        "efficientnetv2b0",
        description=(
            "Frozen feature extractor: efficientnetv2b0 (the report's), resnet50, or lite0 (EfficientNet-Lite0, "
            "ImageNet weights from the package of the lite0 extra, works offline)."
        ),
        json_schema_extra={"enum_from": "backbones"},
    )
    weights: str = Field(
        "imagenet",
        pattern=WEIGHTS_PATTERN,
        description=(
            "imagenet (Keras download; lite0: offline package), none (random), or a path / file:// / s3:// URI "
            "of a Keras .weights.h5 file."
        ),
    )
    image_size: int = Field(224, ge=32, le=1024, description="Posters are resized to image_size x image_size.")
    batch_size: int = Field(128, ge=1, le=4096, description="Batch size of the embed pass and the training.")
    n_trials: int = Field(
        DEFAULT_TRIALS,
        ge=1,
        le=256,
        description=(
            "Hyperparameter sets tried on the head, one mapped task each. Hyperband: the configurations of its "
            "first round; later rounds re-train the best with more epochs."
        ),
        json_schema_extra={"cli": "--trials"},
    )
    tuning: Literal["random", "hyperband"] = Field(
        "random",
        description=(
            "random: every trial gets max_epochs. hyperband: brackets of successive halving (factor 3, at most "
            "4 rounds), each round a fan-out of its own."
        ),
    )
    max_epochs: int = Field(
        20, ge=1, le=1000, description="Epoch budget per model (early stopping, patience 3 on val loss)."
    )
    fine_tune: bool = Field(
        False,
        description=(
            "After the heads, fine-tune genre-cnn from pixels with the top backbone blocks unfrozen (BatchNorm "
            "frozen, low learning rate); kept only if it lowers the validation loss."
        ),
    )
    fine_tune_blocks: int = Field(
        2, ge=1, le=64, description="How many of the backbone's top blocks the fine-tune stage unfreezes."
    )
    fine_tune_learning_rate: float = Field(
        1e-5,
        gt=0,
        le=0.01,
        description="Adam's learning rate in the fine-tune stage (low, so the pretrained features are kept).",
        json_schema_extra={"cli": "--fine-tune-lr"},
    )
    balance: Literal["undersample", "weighted"] = Field(
        "undersample",
        description=(
            "undersample: the report's classes cut to the rarest one. weighted: the same val and test splits, "
            "and every other labelled movie in train with class weights (each genre counts equally)."
        ),
    )
    ova_bags: int = Field(
        DEFAULT_OVA_BAGS,
        ge=1,
        le=20,
        description=(
            "Heads per one-vs-all member, each trained on another draw of the report's 70/30 set and averaged; "
            "1 is the report's member (one set). Each bag costs one more fit on cached features."
        ),
    )
    probe_gate: bool = Field(
        True,
        description=(
            "Refuse to promote a head whose test macro-F1 is below its own linear probe's (logistic regression "
            "on the same cached features) by more than the bootstrap CI."
        ),
    )
    dry_run: bool = Field(
        False, description="Train and evaluate, write the decisions and the report, but register nothing."
    )

    @field_validator("backbone")
    @classmethod
    def _known_backbone(cls, value: str) -> str:
        choices = available_backbones()
        if value not in choices:
            raise ValueError(f"unknown backbone {value!r}; choose one of {', '.join(choices)}")
        return value

    @model_validator(mode="after")
    def _weights_fit_backbone(self) -> RunSettings:
        if self.backbone in _NO_PRETRAINED and self.weights == "imagenet":
            raise ValueError(
                f"backbone {self.backbone!r} has no ImageNet weights: use weights 'none' or a .weights.h5 file"
            )
        return self

    @classmethod
    def from_stored(cls, data: dict) -> RunSettings:
        """A stored ``config.json``: keys of older versions get today's defaults; unknown keys are ignored."""
        return cls.model_validate(data)

    def to_dict(self) -> dict:
        return self.model_dump(mode="json")


class RunSettingsError(ValueError):
    """A run request that :class:`RunSettings` refuses; the message is one line per problem."""


def validate_run_settings(values: dict[str, Any], *, label: Callable[[str], str] = str) -> RunSettings:
    """``RunSettings(**values)`` with a one-line error (``field: problem; ...``, each field named by
    ``label``: the CLI flag, the form's param name) instead of pydantic's dump."""
    try:
        return RunSettings.model_validate(values)
    except ValidationError as exc:
        raise RunSettingsError(describe_errors(exc, label)) from None


def describe_errors(exc: ValidationError, label: Callable[[str], str] = str) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(label(str(p)) for p in error["loc"]) or "settings"
        parts.append(f"{where}: {error['msg'].removeprefix('Value error, ')}")
    return "; ".join(parts)


# ------------------------------------------------------------------------------------------ derived forms

FORM_FIELDS = tuple(name for name in RunSettings.model_fields if name != "snapshot_id")
"""The fields a user sets on the CLI and in the trigger form (the snapshot comes from elsewhere)."""


def field_schema(name: str) -> dict[str, Any]:
    """JSON schema of one form field, as the DAG Param and the CLI see it (enum resolved for this process)."""
    schema = dict(RunSettings.model_json_schema()["properties"][name])
    if schema.pop("enum_from", None) == "backbones":
        schema["enum"] = list(available_backbones())
    schema.pop("cli", None)
    schema.pop("title", None)
    return schema


def field_default(name: str) -> Any:
    info = RunSettings.model_fields[name]
    return info.get_default(call_default_factory=True)


def cli_flag(name: str) -> str:
    extra = RunSettings.model_fields[name].json_schema_extra or {}
    return extra.get("cli") or "--" + name.replace("_", "-")


def field_help(name: str) -> str:
    """The description plus the choices and bounds, for ``--help`` and the form alike."""
    schema = field_schema(name)
    notes = []
    if "enum" in schema:
        notes.append("one of " + ", ".join(map(str, schema["enum"])))
    bounds = [
        (">=", schema.get("minimum")),
        (">", schema.get("exclusiveMinimum")),
        ("<=", schema.get("maximum")),
        ("<", schema.get("exclusiveMaximum")),
    ]
    notes += [f"{op} {value}" for op, value in bounds if value is not None]
    text = schema.get("description", "")
    # Parentheses, not brackets: typer's rich help would read [..] as markup.
    return f"{text} ({'; '.join(notes)})" if notes else text

"""CLI options derived from :class:`postergenre.run_settings.RunSettings`: one option per run field, with its
help, choices and bounds, validated by the same model the DAG's trigger form is derived from.

``@run_settings_options()`` adds the options to a typer command and hands it ``settings_for(snapshot_id)``
instead; a refused value is a usage error (exit code 2) raised before the command does anything.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Annotated, Any, Literal, Optional, get_origin, get_type_hints

import typer

from postergenre.run_settings import (
    FORM_FIELDS,
    RunSettings,
    RunSettingsError,
    cli_flag,
    field_help,
    validate_run_settings,
)

SettingsFor = Callable[[str], RunSettings]
_PENDING_SNAPSHOT = "pending"


def _python_type(name: str) -> type:
    annotation = RunSettings.model_fields[name].annotation
    return str if get_origin(annotation) is Literal else annotation  # choices are checked by the model


def _option(name: str, default: Any) -> inspect.Parameter:
    py_type = _python_type(name)
    flag = cli_flag(name)
    if py_type is bool:
        decls = [f"{flag}/--no-{flag.removeprefix('--')}"]
        annotation = Annotated[bool, typer.Option(*decls, help=field_help(name))]
        return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=bool(default), annotation=annotation)
    info = RunSettings.model_fields[name]
    shown = "POSTERGENRE_SEED" if info.default_factory and default is None else default
    annotation = Annotated[
        Optional[py_type],  # noqa: UP045 - typer reads the runtime annotation
        typer.Option(flag, help=field_help(name), show_default=str(shown)),
    ]
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation)


def run_settings_options(
    *, include: Iterable[str] = FORM_FIELDS, defaults: Mapping[str, Any] | None = None
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Add ``include``'s RunSettings fields as options; ``defaults`` overrides the model's defaults for this
    command (the demo's smaller budget). The command gets ``settings_for: SettingsFor`` as a keyword."""
    fields = tuple(include)
    unknown = set(fields) - set(FORM_FIELDS)
    if unknown:
        raise ValueError(f"not RunSettings form fields: {sorted(unknown)}")
    defaults = dict(defaults or {})

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        hints = get_type_hints(command, include_extras=True)
        own = [
            p.replace(annotation=hints[p.name])
            for p in inspect.signature(command).parameters.values()
            if p.name != "settings_for"
        ]
        added = [_option(name, defaults.get(name, _model_default(name))) for name in fields]

        @functools.wraps(command)
        def wrapper(**kwargs: Any) -> Any:
            given = {name: kwargs.pop(name) for name in fields}
            values = {**defaults, **{k: v for k, v in given.items() if v is not None}}
            try:
                validate_run_settings({"snapshot_id": _PENDING_SNAPSHOT, **values}, label=_flag_label)
            except RunSettingsError as exc:
                raise typer.BadParameter(str(exc)) from None
            return command(**kwargs, settings_for=lambda snapshot_id: _settings(snapshot_id, values))

        parameters = own + added
        wrapper.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in parameters}
        del wrapper.__wrapped__  # typer must see the derived signature, not the command's
        return wrapper

    return decorate


def _flag_label(name: str) -> str:
    return cli_flag(name) if name in RunSettings.model_fields else name


def _model_default(name: str) -> Any:
    info = RunSettings.model_fields[name]
    return None if info.default_factory else info.default


def _settings(snapshot_id: str, values: dict[str, Any]) -> RunSettings:
    return validate_run_settings({"snapshot_id": snapshot_id, **values})

"""How the ``postergenre`` command line fails: exit codes, one-line errors, JSON errors.

Exit codes (also in the README's "Command line" section):

- 0: done.
- 2: usage error: the command line itself is wrong (unknown command or option, missing argument, a value of the
  wrong type or out of range, ``--log-level BOGUS``). Found by click before anything runs.
- 3: known failure: the command ran and refused its input or could not reach what it needs (bad poster, corrupt
  registry file, invalid model name or version, unknown run or snapshot, unreachable store, ...).
- 1: anything else is a bug: an unexpected exception, with its traceback.

Every failure with code 2 or 3 prints exactly one ``error: ...`` line on stderr and, with ``--json``, one JSON
document ``{"error", "type", "exit_code"}`` on stdout (a command with partial results, such as ``predict``,
puts ``error`` and ``type`` into its result document instead).
"""

from __future__ import annotations

import json
import pickle
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import typer
from typer.core import TyperGroup

try:  # typer >= 0.2x vendors click as typer._click and does not re-export its usage errors
    from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError
except ImportError:  # pragma: no cover - typer on top of click
    from click.exceptions import ClickException, NoArgsIsHelpError, UsageError

USAGE_ERROR = 2
KNOWN_FAILURE = 3


def known_failures() -> tuple[type[BaseException], ...]:
    """Exception types that mean "refused or unreachable", not "bug" (imported late: they pull in modules)."""
    from sqlalchemy.exc import InterfaceError, OperationalError

    from postergenre.registry import RegistryError
    from postergenre.snapshots import SnapshotConflict
    from postergenre.storage import StoreError
    from postergenre.validation import ExportError

    # ValueError covers bad input (PosterError, UnsafeWeightsFile, InvalidName, ...), LookupError unknown ids,
    # RuntimeError broken champions and refused settings, OSError files and disks (missing, unreadable, full),
    # SQLAlchemy's Operational/InterfaceError a metadata DB that cannot be reached or talked to.
    return (
        StoreError,
        ExportError,
        SnapshotConflict,
        RegistryError,
        LookupError,
        ValueError,
        RuntimeError,
        OSError,
        pickle.UnpicklingError,
        OperationalError,
        InterfaceError,
    )


def one_line(text: str) -> str:
    """The message as one line: newlines and runs of spaces folded (click wraps, TF appends stack info)."""
    return " ".join(text.split())


def report(message: str, kind: str, *, as_json: bool, code: int = KNOWN_FAILURE) -> int:
    """Print the error (JSON on stdout with ``as_json``, one line on stderr); return ``code``."""
    message = one_line(message) or kind
    if as_json:
        typer.echo(json.dumps({"error": message, "type": kind, "exit_code": code}))
    typer.echo(f"error: {message}", err=True)
    return code


def fail(message: str, kind: str, *, as_json: bool, code: int = KNOWN_FAILURE) -> NoReturn:
    """:func:`report`, then exit with ``code``."""
    raise typer.Exit(report(message, kind, as_json=as_json, code=code))


def exception_message(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _wants_json(argv: Sequence[str]) -> bool:
    args = list(argv)
    return "--json" in (args[: args.index("--")] if "--" in args else args)


class Group(TyperGroup):
    """The root command: usage errors become one ``error:`` line (and a JSON error with ``--json``), exit 2,
    like every other failure, instead of click's multi-line usage box."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        try:
            code = super().main(argv, prog_name, complete_var, standalone_mode=False, **extra)
        except NoArgsIsHelpError as exc:  # a bare group: its help, as before
            self._show(exc)
            code = exc.exit_code
        except UsageError as exc:
            code = _usage_error(exc, _wants_json(argv))
        except ClickException as exc:
            exc.show()
            code = exc.exit_code
        except typer.Abort:
            typer.echo("Aborted!", err=True)
            code = 1
        if not standalone_mode:
            return code
        sys.exit(code if isinstance(code, int) else 0)

    def _show(self, exc: ClickException) -> None:
        from typer import core

        if core.HAS_RICH and self.rich_markup_mode is not None:
            from typer import rich_utils

            rich_utils.rich_format_error(exc)
        else:
            exc.show()


def _usage_error(exc: UsageError, as_json: bool) -> int:
    where = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
    return report(exc.format_message() + where, type(exc).__name__, as_json=as_json, code=USAGE_ERROR)

"""Progress reporting for long steps: rich bars on an interactive terminal, periodic log lines elsewhere.

Library functions take a ``Progress`` and call ``progress.task(description, total)`` to get an ``advance(n)``
callable, so the same code drives a terminal bar in the CLI and plain log lines inside an Airflow task.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from postergenre.log import get_logger

Advance = Callable[[int], None]


class Progress:
    """No-op progress: the default for library calls and tests."""

    @contextmanager
    def task(self, description: str, total: int | None) -> Iterator[Advance]:
        yield lambda n=1: None


class LogProgress(Progress):
    """Logs ``done/total`` at most every ``interval`` seconds (for non-interactive runs such as Airflow)."""

    def __init__(self, interval: float = 10.0) -> None:
        self.interval = interval
        self.log = get_logger("postergenre.progress")

    @contextmanager
    def task(self, description: str, total: int | None) -> Iterator[Advance]:
        state = {"done": 0, "last": time.monotonic()}
        start = state["last"]

        def advance(n: int = 1) -> None:
            state["done"] += n
            now = time.monotonic()
            if now - state["last"] >= self.interval:
                state["last"] = now
                self.log.info("progress", step=description, done=state["done"], total=total)

        yield advance
        self.log.info(
            "step done", step=description, done=state["done"], seconds=round(time.monotonic() - start, 2)
        )


class RichProgress(Progress):
    """A rich progress bar on stderr (stdout stays clean for ``--json``)."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as RichBar

        self._bar = RichBar(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=False,
        )

    @contextmanager
    def task(self, description: str, total: int | None) -> Iterator[Advance]:
        with self._bar:
            task_id = self._bar.add_task(description, total=total)
            yield lambda n=1: self._bar.advance(task_id, n)


def default_progress() -> Progress:
    return RichProgress() if sys.stderr.isatty() else LogProgress()

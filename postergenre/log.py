"""Structured logging: key=value lines for humans on a TTY, JSON lines otherwise (Airflow, CI)."""

from __future__ import annotations

import logging
import sys

import structlog


class _StderrLogger:
    """Prints to whatever ``sys.stderr`` is at call time, not the stream that was current at configure time:
    test runners and CLI harnesses swap and close stderr, and a logger holding the old one would crash later."""

    def msg(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    log = debug = info = warning = warn = error = critical = exception = fatal = msg


LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def configure_logging(level: str = "INFO", json: bool | None = None) -> None:
    """``level`` is one of LEVELS (any case); anything else is refused rather than quietly taken as INFO."""
    if level.upper() not in LEVELS:
        raise ValueError(f"unknown log level {level!r}: use one of {', '.join(LEVELS)}")
    if json is None:
        json = not sys.stderr.isatty()
    renderer = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=lambda *args: _StderrLogger(),
        cache_logger_on_first_use=False,
    )


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name)

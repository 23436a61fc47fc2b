"""structlog setup: JSON lines when not on a TTY (journald keeps them), readable console otherwise."""

from __future__ import annotations

import logging
import sys

import structlog


def _stdout_logger(*_args: object) -> structlog.PrintLogger:
    # looked up per logger, so a replaced sys.stdout (tests, daemons re-opening it) is honoured
    return structlog.PrintLogger(sys.stdout)


def configure_logging(level: str = "info", fmt: str = "auto") -> None:
    """Configure structlog once for the process."""
    use_json = fmt == "json" or (fmt == "auto" and not sys.stdout.isatty())
    renderer = structlog.processors.JSONRenderer(ensure_ascii=False) if use_json else structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=_stdout_logger,
        cache_logger_on_first_use=False,
    )

"""One logging setup for both programs: structlog, one line per event, on stdout for journald.

JSON lines when stdout is not a TTY, readable console lines on one. Every line, from structlog,
from a library's stdlib `logging` call or from `say()` (what a CLI prints for people and scripts),
is written whole under one lock, so lines from several threads never interleave: before, a JSON
log line could land in the middle of `print("API: …")`, which writes its text and its newline in
two calls.
"""

from __future__ import annotations

import logging
import sys
import threading
from typing import Any, TextIO

import structlog

_WRITE_LOCK = threading.Lock()


_LOG_TO_STDERR = False  # one-shot commands whose stdout is their result (detect, token create) log to stderr


def write_line(text: str, stream: TextIO | None = None) -> None:
    """Write `text` and a newline in one call, under the lock, and flush (stdout by default)."""
    out = stream if stream is not None else sys.stdout  # looked up now: tests and daemons replace it
    with _WRITE_LOCK:
        out.write(text + "\n")
        out.flush()


def say(text: str, *, err: bool = False) -> None:
    """A line for people (or a script reading the output): stdout, or stderr with `err=True`."""
    write_line(text, sys.stderr if err else None)


class LineLogger:
    """structlog's final logger: each rendered event is one line on the current stdout."""

    def msg(self, message: str) -> None:
        write_line(message, sys.stderr if _LOG_TO_STDERR else None)

    log = debug = info = warn = warning = error = critical = exception = fatal = msg


def _line_logger(*_args: object) -> LineLogger:
    return LineLogger()


class _LineHandler(logging.Handler):
    """stdlib logging records (libraries: aiohttp, paho, zeep …) through the same lock and renderer."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            write_line(self.format(record), sys.stderr if _LOG_TO_STDERR else None)
        except Exception:  # noqa: BLE001 - logging must never raise into the caller
            self.handleError(record)


def _level(level: str) -> int:
    value = logging.getLevelName(level.upper())
    if not isinstance(value, int):
        raise ValueError(f"log level {level!r} is not one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
    return value


def configure_logging(level: str = "info", fmt: str = "auto", *, to_stderr: bool = False) -> None:
    """Configure structlog and stdlib logging once for the process. `fmt`: auto, json or console.

    Services (`edge-agent run`, `cloud-receiver serve`) log to stdout, which journald keeps;
    `to_stderr` is for one-shot commands whose stdout is their result.
    """
    global _LOG_TO_STDERR
    _LOG_TO_STDERR = to_stderr
    use_json = fmt == "json" or (fmt == "auto" and not (sys.stderr if to_stderr else sys.stdout).isatty())
    renderer: Any = (structlog.processors.JSONRenderer(ensure_ascii=False) if use_json
                     else structlog.dev.ConsoleRenderer(colors=False))
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    numeric = _level(level)
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=_line_logger,
        cache_logger_on_first_use=False,
    )
    handler = _LineHandler()
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name, structlog.processors.format_exc_info],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    ))
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _LineHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)

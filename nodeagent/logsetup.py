"""structlog configuration: logs go to stderr, results to stdout.

`auto` renders for a person on a TTY and JSON otherwise (DaemonSet, systemd).
"""

from __future__ import annotations

import logging
import sys

import structlog


def configure(log_format: str = "auto", verbosity: int = 0) -> None:
    level = logging.WARNING - 10 * verbosity  # -q: ERROR, default: WARNING, -v: INFO, -vv: DEBUG
    level = max(logging.DEBUG, min(logging.CRITICAL, level))
    if log_format == "auto":
        log_format = "console" if sys.stderr.isatty() else "json"
    renderer = (
        structlog.processors.JSONRenderer()
        if log_format == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info if log_format == "json" else structlog.dev.set_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )

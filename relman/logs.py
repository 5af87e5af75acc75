"""structlog set-up: one event per line, key=value for journald or JSON, secrets redacted."""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any, TextIO

import structlog

from relman.redact import redact_url

SECRET_KEY = re.compile(r"(pass|secret|token|key|auth|cookie|credential)", re.IGNORECASE)
REDACTED = "<redacted>"


def redact_secrets(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """A belt, not the braces: callers log env_keys, never an environment, and messages
    with app.repo already redacted; a URL's credentials are hidden in any text value."""
    for key, value in list(event.items()):
        if key not in ("event", "env_keys") and SECRET_KEY.search(key):
            event[key] = REDACTED
        elif isinstance(value, str):
            event[key] = redact_url(value)
    return event


def configure(
    *, json: bool = False, level: int = logging.INFO, stream: TextIO | None = None
) -> None:
    """Configure structlog once at process start."""
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if json
        else structlog.processors.KeyValueRenderer(key_order=["event"], drop_missing=True)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact_secrets,  # after format_exc_info: a traceback's messages are text too
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stderr),
        cache_logger_on_first_use=True,
    )


def tail_file(path: Path, n: int = 20) -> str:
    """The last *n* lines of a log file, or "" when there is none."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            data = f.read().decode(errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(data.splitlines()[-n:])

"""The append-only audit log: one JSON object per line in log/history.jsonl."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from relman.redact import redact_url


def record(path: Path, event: str, **fields: Any) -> dict[str, Any]:
    """Append one entry (with time) and fsync it; returns the entry."""
    entry = {"time": round(time.time(), 3), "event": event, **fields}
    # A belt: messages that name app.repo are redacted where they are made.
    line = (redact_url(json.dumps(entry, sort_keys=True)) + "\n").encode()
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o640)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            # A crash mid-append left a torn last line: end it, or this entry would be
            # glued to it and lost with it. Readers skip the torn line.
            line = b"\n" + line
        os.write(fd, line)  # one write of one line: O_APPEND keeps concurrent lines whole
        os.fsync(fd)
    finally:
        os.close(fd)
    return entry


def read(path: Path, *, event: str | None = None, release: str | None = None,
         since: float | None = None) -> Iterator[dict[str, Any]]:
    """Entries, oldest first, filtered; a torn last line (crash mid-write) is skipped."""
    try:
        f = path.open()
    except FileNotFoundError:
        return
    with f:
        for line in f:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if not isinstance(entry, dict):
                continue
            if event and entry.get("event") != event:
                continue
            if release and entry.get("release") != release:
                continue
            if since and entry.get("time", 0) < since:
                continue
            yield entry

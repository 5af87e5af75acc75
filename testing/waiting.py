"""Bounded polling for conditions that real processes make true eventually."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T], timeout: float = 10, interval: float = 0.05, what: str = ""
) -> T:
    """Return *predicate*'s first truthy value, or raise TimeoutError after *timeout* seconds.

    Exceptions from *predicate* propagate: a predicate that knows the wait is hopeless (the
    process exited) raises instead of burning the timeout.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what or predicate!r}")
        time.sleep(interval)


def pid_gone(pid: int) -> bool:
    """*pid* has exited: no such process, or a zombie its parent has not reaped yet. One
    look, so it cannot race the exit between a pid_exists() and a Process()."""
    import psutil

    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True

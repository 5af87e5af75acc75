"""Restart policy: whether and when to restart a crashed server, and when it crash-loops.

A pure function of the exit history, the policy and the time, so that it is tested with
tables of exits rather than with processes and sleeps (STYLE practice 17).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Final


class RestartPolicy(StrEnum):
    ALWAYS = "always"
    ON_FAILURE = "on-failure"
    NEVER = "never"


# A server that ran this long before exiting was healthy: its exit starts a new count.
MIN_UPTIME: Final = 10.0
# This many quick exits in a row is a crash loop.
CRASH_LOOP_EXITS: Final = 3
FIRST_DELAY: Final = 0.5


@dataclass(frozen=True, slots=True)
class Exit:
    started: float  # monotonic time the server started
    exited: float   # monotonic time it exited
    returncode: int | None  # None: not our child (adopted), so unknown


@dataclass(frozen=True, slots=True)
class Decision:
    restart: bool
    delay: float
    crash_loop: bool
    reason: str


def quick_exits(history: Sequence[Exit]) -> int:
    """How many of the most recent exits in a row came within MIN_UPTIME of their start."""
    count = 0
    for ex in reversed(history):
        if ex.exited - ex.started >= MIN_UPTIME:
            break
        count += 1
    return count


def decide(history: Sequence[Exit], policy: RestartPolicy, backoff_max: float) -> Decision:
    """What to do about the last exit in *history* (which must not be empty)."""
    last = history[-1]
    failed = last.returncode != 0  # an unknown code (adopted server) counts as a failure
    quick = quick_exits(history)
    crash_loop = quick >= CRASH_LOOP_EXITS
    if policy is RestartPolicy.NEVER:
        return Decision(False, 0.0, crash_loop, "restart.policy is never")
    if policy is RestartPolicy.ON_FAILURE and not failed:
        return Decision(False, 0.0, crash_loop, "exited cleanly (code 0) and policy is on-failure")
    # Exponential backoff over consecutive quick exits: 0.5, 1, 2, 4 ... up to backoff_max.
    delay = 0.0 if quick <= 1 else min(backoff_max, FIRST_DELAY * 2 ** (quick - 2))
    why = f"exit code {last.returncode}" if last.returncode is not None else "exited"
    return Decision(True, delay, crash_loop,
                    f"{why}; {quick} quick exit(s) in a row" if quick else why)

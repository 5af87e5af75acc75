"""Fault hooks for tests, run right after a step is journaled; the value is <step> or
<job>:<step> (`deploy:healthy`). Nothing happens unless the daemon's environment asks."""

from __future__ import annotations

import errno
import os
import signal
from pathlib import Path

from relman.errors import writing

# Kill the daemon with SIGKILL there: the crash-safety tests.
CRASH_ENV = "RELMAN_TEST_CRASH_AT"
# Fail the job there as a full disk would (the next journal write refused): a failed job
# stops what it started and puts the links back.
FAIL_ENV = "RELMAN_TEST_FAIL_AT"


def after_step(job: str, step: str, journal: Path) -> None:
    """Crash or fail here if the environment asks for it."""
    here = (step, f"{job}:{step}")
    if os.environ.get(CRASH_ENV) in here:
        os.kill(os.getpid(), signal.SIGKILL)
    if os.environ.get(FAIL_ENV) in here:
        with writing(journal):
            raise OSError(errno.ENOSPC, f"{FAIL_ENV}={os.environ[FAIL_ENV]}")

"""What a test needs from the machine: without it the test skips, except on CI (CI=true),
where it fails, so that CI never passes by skipping (a missing nginx, uWSGI, root...)."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def on_ci() -> bool:
    return os.environ.get("CI") == "true"


def skip_or_fail(missing: str, fix: str) -> NoReturn:
    """Skip the test because *missing*; on CI, fail and say how CI must *fix* it."""
    if on_ci():
        pytest.fail(f"{missing}; CI must {fix}")
    pytest.skip(missing)


def need(condition: bool, missing: str, fix: str) -> None:
    """skip_or_fail() unless *condition* holds."""
    if not condition:
        skip_or_fail(missing, fix)


def need_root(why: str) -> None:
    need(os.geteuid() == 0, f"needs root: {why}", "run the tests as root")

"""Release ids: UTC commit timestamp + short sha, sortable and the same on every host."""

from __future__ import annotations

import re
from datetime import UTC, datetime

ID_PATTERN = re.compile(r"^(\d{8}T\d{6}Z)-([0-9a-f]{7,40})$")


def make_release_id(commit_time: int, sha: str) -> str:
    """`20261123T031500Z-1a2b3c4` from a commit's unix time and sha."""
    stamp = datetime.fromtimestamp(commit_time, tz=UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{sha[:7]}"


def is_release_id(text: str) -> bool:
    """True when *text* has the shape of a release id (never a path, never an option)."""
    return ID_PATTERN.fullmatch(text) is not None

"""Release ids: UTC commit timestamp + short sha, sortable and the same on every host."""

from __future__ import annotations

import re
from datetime import UTC, datetime

ID_PATTERN = re.compile(r"^(\d{8}T\d{6}Z)-([0-9a-f]{7,40})$")
# The commit times an id can hold: 1970 (git prints no %ct for an earlier date) to the end
# of year 9999 (four digits; datetime stops there too).
LAST_TIME = int(datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp())


def parse_commit_time(text: str) -> int | None:
    """git's `%ct` as an id's timestamp, or None when no release id can hold it."""
    digits = re.fullmatch(r"[0-9]{1,12}", text)  # ASCII only: int() also reads "٣"
    return int(text) if digits and int(text) <= LAST_TIME else None


def make_release_id(commit_time: int, sha: str) -> str:
    """`20261123T031500Z-1a2b3c4` from a commit's unix time and sha."""
    stamp = datetime.fromtimestamp(commit_time, tz=UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{sha[:7]}"


def is_release_id(text: str) -> bool:
    """True when *text* has the shape of a release id (never a path, never an option)."""
    return ID_PATTERN.fullmatch(text) is not None

"""What the last switch leaves behind, kept in state/switch.json so a restarted daemon keeps it:
the verification window of the release it made live (an automatic rollback is still possible)
and the keep_warm deadline of the release kept running for a rollback.

Times are wall-clock (time.time()): they must mean the same thing to the next daemon, which
time.monotonic() does not promise across a reboot.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import structlog

from relman.atomic import set_aside, write_json_atomic

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class SwitchRecord:
    release: str = ""  # the release the last switch made live
    at: float = 0.0  # when
    # at + swap.verify_window as it was then: a reload may shorten a probation, never
    # lengthen or reopen one.
    until: float = 0.0
    # Its probation is over: its one automatic rollback failed or was skipped, or an
    # automatic rollback made it live.
    settled: bool = False
    warm: str = ""  # the release kept running for a rollback, if any
    warm_until: float = 0.0  # when its keep_warm window ends

    @property
    def switch(self) -> tuple[str, float]:
        """What tells one switch from another."""
        return (self.release, self.at)


def on_probation(record: SwitchRecord, live: str | None, now: float, window: float) -> bool:
    """Whether *live* may still be rolled back automatically: the last switch made it live
    less than *window* seconds ago (and less than the window of its day), and that switch is
    not settled. A clock that went back counts as the end."""
    return (bool(record.release) and record.release == live and not record.settled
            and record.at <= now < min(record.until, record.at + window))


def warm_left(record: SwitchRecord, release: str, now: float) -> float:
    """Seconds *release* may stay warm: 0 unless it is the recorded warm release and its
    keep_warm window is still open (a server nobody meant to keep is stopped)."""
    if not release or record.warm != release:
        return 0.0
    return max(0.0, record.warm_until - now)


def _parse(data: Any) -> SwitchRecord:
    """The record in switch.json's JSON; TypeError or ValueError if it is not one."""
    if not isinstance(data, dict):
        raise TypeError("not a JSON object")
    return SwitchRecord(
        release=str(data.get("release", "")), at=float(data.get("at", 0.0)),
        until=float(data.get("until", 0.0)), settled=bool(data.get("settled", False)),
        warm=str(data.get("warm", "")), warm_until=float(data.get("warm_until", 0.0)))


class SwitchFile:
    """state/switch.json: the current SwitchRecord, replaced atomically on every change."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.record = self._load()

    def _load(self) -> SwitchRecord:
        try:
            return _parse(json.loads(self.path.read_text()))
        except FileNotFoundError:
            return SwitchRecord()
        except (IsADirectoryError, ValueError, TypeError) as e:
            set_aside(self.path, reason=str(e) or type(e).__name__)  # kept for a post-mortem
            return SwitchRecord()
        except OSError as e:
            log.warning("switch_record.unreadable", path=str(self.path), error=str(e))
            return SwitchRecord()

    def forget_warm(self) -> None:
        """No release is kept warm any more (reused, cooled, or every server stopped)."""
        self.update(warm="", warm_until=0.0)

    def update(self, **changes: Any) -> SwitchRecord:
        return self.put(replace(self.record, **changes))

    def put(self, record: SwitchRecord) -> SwitchRecord:
        if record != self.record:
            write_json_atomic(self.path, asdict(record))
            self.record = record
        return record

"""The transaction journal: one atomically written record of the job in progress and its step."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

from relman.atomic import write_json_atomic


class Step(StrEnum):
    """Deploy steps; the values are what the journal, --json and log events say."""

    BEGUN = "begun"
    FETCHED = "fetched"
    BUILT = "built"
    RELEASED = "released"
    STARTED = "started"
    HEALTHY = "healthy"
    PREVIEWED = "previewed"
    PUBLISHED = "published"  # [static] files in static/, before the switch (releases/static.py)
    SWITCHED = "switched"
    VERIFIED = "verified"
    HANDED_OVER = "handed_over"  # the [processes] instances are the new release's
    DRAINED = "drained"
    STOPPED_OLD = "stopped_old"
    DONE = "done"
    FAILED = "failed"


ORDER: Final[tuple[Step, ...]] = tuple(Step)


def after(step: Step, other: Step) -> bool:
    """True when *step* comes after *other* in a deploy."""
    return ORDER.index(step) > ORDER.index(other)


@dataclass(frozen=True, slots=True, kw_only=True)
class JournalEntry:
    job: str  # deploy | rollback | restart | start
    job_id: str = ""  # RELMAN_JOB in the environment of every process the job runs
    release: str = ""
    ref: str = ""
    who: str = ""
    step: Step = Step.BEGUN
    candidate: str = ""  # instance started by this job
    previous: str = ""   # instance that was live when the job began
    previous_release: str = ""
    started: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["step"] = str(self.step)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> JournalEntry:
        if not isinstance(data, Mapping):
            raise TypeError("a journal entry is a JSON object")
        known = set(cls.__dataclass_fields__)
        fields = {k: v for k, v in data.items() if k in known}
        fields["step"] = Step(fields.get("step", "begun"))
        return cls(**fields)


class Journal:
    """state/journal.json: present while a job runs, removed when it ends."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entry: JournalEntry | None = None

    def begin(self, entry: JournalEntry) -> JournalEntry:
        """Start a job; *entry* is the job in progress only once it is on disk: a failed
        write leaves no job behind (status would show it forever, and automatic rollbacks,
        which wait for the job to end, would never come)."""
        write_json_atomic(self.path, entry.to_json())
        self.entry = entry
        return entry

    def step(self, step: Step, **changes: Any) -> JournalEntry:
        """Record that *step* is done; one atomic write per step (kept only once written)."""
        if self.entry is None:
            raise RuntimeError("journal step outside a job")
        entry = replace(self.entry, step=step, updated=time.time(), **changes)
        write_json_atomic(self.path, entry.to_json())
        self.entry = entry
        return entry

    def end(self) -> None:
        self.entry = None
        self.path.unlink(missing_ok=True)

    def unfinished(self) -> JournalEntry | None:
        """The entry a crashed daemon left behind, if any."""
        try:
            return JournalEntry.from_json(json.loads(self.path.read_text()))
        except FileNotFoundError:
            return None
        except (ValueError, TypeError):
            return JournalEntry(job="unknown", step=Step.BEGUN)

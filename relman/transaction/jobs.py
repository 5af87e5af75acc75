"""JobLog: the journal entry and the history lines of the job in progress (deploy, rollback,
restart, start), kept apart from what the job does."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import replace

import structlog

from relman.errors import RelmanError
from relman.journal import Journal, JournalEntry, Step
from relman.releases import Manifest, ReleaseStore
from relman.transaction import faults

log = structlog.get_logger(__name__)

Report = Callable[[str, str], None]  # (step, message)

# In the environment of every process a job runs; see interrupted.kill_job_processes().
JOB_ENV = "RELMAN_JOB"


class JobLog:
    """Begins, steps and ends the journal entry of one job at a time, and writes its
    outcome to the history."""

    def __init__(self, journal: Journal, store: ReleaseStore) -> None:
        self.journal, self.store = journal, store
        self.started = 0.0  # monotonic time the job began
        self.switch_ms = 0.0  # daemon work from the job's start to its switch, last swap
        self._on_success: list[tuple[str, dict[str, object]]] = []  # history, if it succeeds

    def begin(self, entry: JournalEntry) -> None:
        job_id = uuid.uuid4().hex[:12]
        self.journal.begin(replace(entry, job_id=job_id))  # first: it may fail (a full disk)
        self.started = time.monotonic()
        self.switch_ms = 0.0  # a job that switches nothing (restart NAME) says 0
        self.store.job_env = {JOB_ENV: job_id}

    def step(self, step: Step, report: Report, message: str, **changes: str) -> None:
        entry = self.journal.step(step, **changes)
        log.info("deploy.step_done", step=str(step), release=entry.release)
        report(str(step), message)
        faults.after_step(entry.job, str(step), self.journal.path)  # tests only

    def switched(self) -> float:
        """Milliseconds from the job's start to its switch, now."""
        self.switch_ms = round((time.monotonic() - self.started) * 1000, 1)
        return self.switch_ms

    def on_success(self, event: str, **fields: object) -> None:
        """A history line the job writes only if it succeeds."""
        self._on_success.append((event, fields))

    def end(self) -> None:
        self._on_success = []
        self.store.discard_probe()
        self.store.job_env = {}
        self.journal.end()

    def failed(self, error: BaseException, report: Report) -> None:
        entry = self.journal.entry
        message = error.message if isinstance(error, RelmanError) else type(error).__name__
        if entry is not None:
            self.store.record(f"{entry.job}_failed", release=entry.release, ref=entry.ref,
                              who=entry.who, step=str(entry.step), error=message)
        report(str(Step.FAILED), message)
        self.end()

    def done_anyway(self, write: Callable[[], object]) -> None:
        """A write once the old server is retired: refused, it is a warning; the job stands."""
        try:
            write()
        except RelmanError as e:  # StateWriteFailed
            log.warning("job.write_failed_after_swap", error=e.message)

    def finish(self, event: str, report: Report, manifest: Manifest, **fields: object) -> None:
        self.done_anyway(lambda: self.journal.step(Step.DONE))
        for pending, pending_fields in self._on_success:
            self.store.record(pending, **pending_fields)
        self.store.record(event, release=manifest.id, sha=manifest.sha,
                          switch_ms=self.switch_ms, **fields)
        self.end()
        report(str(Step.DONE), f"{manifest.id} is live")

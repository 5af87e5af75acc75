"""A prepared candidate (DESIGN section 9, issue 10): `relman deploy REF --prepare` runs a
deploy's fetch, build, release phase, health check and nginx preview, then stops short of
the switch. The healthy candidate stays on run/next.sock, recorded in state/prepared.json
(release id, candidate instance, deadline), until `relman abort ID` or swap.prepare_timeout
stops it.

`relman switch ID` runs the swap's steps 4 to 7 for it (swap() with *prepared*), after a
fresh health check of the candidate; `relman switch ID --keep-warm SECONDS` keeps the old
release warm that long (a fleet coordinator switches hosts back without a start).

Decisions (man/relman.1 says them too):
- One prepared candidate per app. The job lock is released once prepare ends (status, ps,
  logs work), but every other job asked for (deploy, rollback, restart, start, stop,
  scale, prune) is refused with LockHeld (exit 4) naming `relman abort ID` until it is
  switched, aborted or expired. Refused, not aborted for it: on a fleet host the
  coordinator owns the candidate, and a local job that silently stopped it would fail the
  fleet's switch on this host. The daemon's own jobs (a crash restart of the live server,
  an automatic rollback) abort it first: serving comes before a candidate.
- `switch` or `abort` of an id that is not the prepared one (or with none prepared) is a
  UsageError, exit 2: the caller named the wrong thing, nothing was busy.
- An aborted or expired candidate's release stays built, not failed: it was healthy, it
  was never live (so it is no rollback target), and deploying the same ref again reuses it.
- A daemon killed while a candidate is prepared: the next daemon adopts it, prepared for
  what is left until its deadline (next.sock leads to it again, and one timer is set), if
  it runs and answers its health check and no job was interrupted; else it is stopped
  like any adopted instance that is not live, next.sock leads to the live server, and
  the history says prepare_abandoned (or prepare_expired, once its deadline passed).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import structlog

from relman.atomic import replace_symlink, write_json_atomic
from relman.config import HealthConfig
from relman.errors import LockHeld, UsageError
from relman.journal import JournalEntry, Step
from relman.releases import Manifest
from relman.results import AbortResult, DeployResult, PrepareResult
from relman.supervisor import ServerHandle
from relman.supervisor.health import in_range, probe_socket
from relman.transaction.jobs import Report
from relman.transaction.swap import healthy_candidate, preview, swap

if TYPE_CHECKING:
    from pathlib import Path

    from relman.transaction.app import App

log = structlog.get_logger(__name__)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Prepared:
    """The prepared candidate: its release, its server and the time (epoch) it expires."""

    release: str
    sha: str
    candidate: ServerHandle
    deadline: float


def prepared_path(app: App) -> Path:
    return app.root.state / "prepared.json"


def refuse_while_prepared(app: App, job: str) -> None:
    """A LockHeld naming `relman abort ID` when a candidate is prepared."""
    prepared = app.prepared
    if prepared is not None:
        raise LockHeld(f"{job}: release {prepared.release} is prepared on next.sock "
                       f"({prepared.candidate.instance}) until it is switched or aborted",
                       hint=f"relman abort {prepared.release}")


async def unless_prepared(app: App, job: str, work: Callable[[Report], Awaitable[T]],
                          report: Report, *, internal: bool) -> T:
    """*work*, the daemon's *job*, unless a candidate is prepared and the job is no switch
    or abort of it: a job asked for is refused; one of the daemon's own (*internal*: a
    crash restart of the live server, an automatic rollback) aborts the candidate first,
    since the live server comes before a candidate, and its links would move anyway."""
    if app.prepared is not None and not job.startswith(("abort ", "switch ")):
        if not internal:
            refuse_while_prepared(app, job)
        await abort(app, app.prepared.release, f"relman ({job})")
    return await work(report)


async def switch(app: App, release: str, who: str, report: Report, *,
                 keep_warm: float | None = None) -> DeployResult:
    """`relman switch RELEASE`: steps 4 to 7 of the swap for the prepared candidate, after
    it answers its health check again. Any failure leaves the live release serving and
    stops the candidate (swap's abandon): it is no longer prepared either way."""
    prepared = _the_prepared(app, release, "switch")
    if keep_warm is not None and not (isinstance(keep_warm, (int, float))
                                      and 0 <= keep_warm < float("inf")):
        raise UsageError(f"switch {release}: keep_warm {keep_warm!r}: not a number >= 0")
    manifest = app.store.get(release)
    app.jobs.begin(JournalEntry(job="switch", release=release, ref=manifest.ref, who=who,
                                step=Step.PREVIEWED, candidate=prepared.candidate.instance))
    app.prepared = None
    try:
        prepared_path(app).unlink(missing_ok=True)
        await swap(app, manifest, report, previous=app.live_manifest(),
                   prepared=prepared.candidate, keep_warm=keep_warm)
    except BaseException as e:
        app.jobs.failed(e, report)
        raise
    app.jobs.finish("deployed", report, manifest, ref=manifest.ref, who=who,
                    prepared=True)
    return DeployResult(release=manifest.id, sha=manifest.sha, ref=manifest.ref,
                        switch_ms=app.switch_ms)


def _the_prepared(app: App, release: str, command: str) -> Prepared:
    """The prepared candidate, when it is *release*'s; else a UsageError (exit 2)."""
    prepared = app.prepared
    if prepared is None:
        raise UsageError(f"{command} {release}: no release is prepared")
    if prepared.release != release:
        raise UsageError(f"{command} {release}: the prepared release is {prepared.release}")
    return prepared


async def prepare_job(app: App, ref: str, who: str, report: Report, *, release_phase: bool,
                      schedule: Callable[[str, Callable[[Report], Awaitable[object]], float],
                                         None]) -> PrepareResult:
    """The daemon's `deploy --prepare`: prepare, then the one timer of its deadline."""
    ready = await prepare(app, ref, who, report, release_phase=release_phase)
    schedule(f"abort {ready.release}", lambda _report: expire(app, ready),
             max(0.0, ready.deadline - app.clock()))
    return PrepareResult(release=ready.release, sha=ready.sha, ref=ref,
                         prepared_until=round(ready.deadline, 3))


async def prepare(app: App, ref: str, who: str, report: Report, *,
                  release_phase: bool = True) -> Prepared:
    """Fetch *ref*, build it, run its release phase (unless not *release_phase*), start a
    healthy candidate and preview it on next.sock; leave it there, prepared."""
    app.jobs.begin(JournalEntry(job="deploy", ref=ref, who=who))
    candidate: ServerHandle | None = None
    try:
        manifest = await app.fetch_and_build(ref, who, report, release_phase=release_phase,
                                             before_build=lambda m: _refuse_live(app, m))
        manifest = app._settings_changed(manifest, app.live_manifest(), "deploy", who, report)
        health = _preparable(app, manifest)
        app.journal.step(Step.RELEASED, release=manifest.id,
                         previous=app.live.instance if app.live else "")
        candidate, detail = await healthy_candidate(app, manifest, health, report,
                                                    reuse_warm=False)
        app.jobs.step(Step.HEALTHY, report, detail, candidate=candidate.instance)
        await preview(app, candidate, health, report)
        prepared = Prepared(manifest.id, manifest.sha, candidate,
                            app.clock() + app.config.swap.prepare_timeout)
        write_json_atomic(prepared_path(app), {
            "release": prepared.release, "candidate": candidate.instance,
            "deadline": prepared.deadline})
    except BaseException as e:
        if candidate is not None:
            await _stop_candidate(app, candidate)
        app.jobs.failed(e, report)
        raise
    app.prepared = prepared
    app.store.record("prepared", release=manifest.id, sha=manifest.sha, ref=ref, who=who,
                     candidate=candidate.instance, deadline=round(prepared.deadline, 3))
    app.jobs.end()
    report("prepared", f"{manifest.id} is prepared on next.sock for "
           f"{app.config.swap.prepare_timeout:g}s")
    return prepared


def _refuse_live(app: App, manifest: Manifest) -> None:
    """Before building: a release that is live already is no candidate (exit 2)."""
    if app.live is not None and app.live.release == manifest.id:
        raise UsageError(f"deploy --prepare: release {manifest.id} is live already")


def _preparable(app: App, manifest: Manifest) -> HealthConfig:
    """The [health] *manifest*'s candidate is checked with; a UsageError when there is no
    candidate to prepare."""
    settings = app.store.settings(manifest)
    if settings.server.kind == "none":
        raise UsageError('deploy --prepare: server.kind = "none": no candidate to prepare')
    return app.health(settings)


async def abort(app: App, release: str, who: str, *, event: str = "prepare_aborted"
                ) -> AbortResult:
    """Stop the prepared candidate of *release*; next.sock leads to the live server again.
    A UsageError (exit 2) when *release* is not the prepared one."""
    prepared = _the_prepared(app, release, "abort")
    app.prepared = None
    try:
        await _stop_candidate(app, prepared.candidate)
    finally:
        prepared_path(app).unlink(missing_ok=True)
        app.store.record(event, release=release, who=who,
                         candidate=prepared.candidate.instance)
    log.info("prepare.aborted", release=release, recorded=event)
    return AbortResult(release=release, candidate=prepared.candidate.instance)


async def expire(app: App, prepared: Prepared) -> AbortResult | None:
    """swap.prepare_timeout is over (the daemon's one timer): *prepared* stops, unless it
    was switched or aborted meanwhile."""
    if app.prepared is not prepared:
        return None
    return await abort(app, prepared.release, "relman (swap.prepare_timeout)",
                       event="prepare_expired")


async def _stop_candidate(app: App, candidate: ServerHandle) -> None:
    """Stop *candidate*; next.sock back to the live server's listener (none: removed)."""
    try:
        await app.stop_server(candidate)
    finally:
        live = app.live
        if live is not None and live.alive:
            replace_symlink(app.root.next_sock, live.listener.name)
        else:
            app.root.next_sock.unlink(missing_ok=True)


def _recorded(app: App) -> tuple[str, str, float] | None:
    """(release, candidate instance, deadline) from state/prepared.json; None when there is
    none; ("", "", 0) when it is unreadable."""
    try:
        data = json.loads(prepared_path(app).read_text())
    except FileNotFoundError:
        return None
    except ValueError:
        data = None
    fields = data if isinstance(data, dict) else {}
    deadline = fields.get("deadline")
    return (str(fields.get("release", "")), str(fields.get("candidate", "")),
            float(deadline) if isinstance(deadline, (int, float)) else 0.0)


async def readopt(app: App, handle: ServerHandle, interrupted: bool, notes: list[str]
                  ) -> bool:
    """After a daemon restart: *handle*, adopted and not live, is prepared again when
    state/prepared.json names it, its deadline is ahead, no job was interrupted, and it
    answers its health check. True if so (it must not be stopped)."""
    recorded = _recorded(app)
    if interrupted or recorded is None or recorded[1] != handle.instance:
        return False
    release, _candidate, deadline = recorded
    if deadline <= app.clock() or not handle.alive:
        return False
    health = app.release_health(release)
    probe = await probe_socket(handle.listener, protocol=handle.protocol, path=health.path,
                               timeout=5)
    if not in_range(probe.status, health.expect) or not handle.alive:
        return False
    app.prepared = Prepared(release, app.store.get(release).sha, handle, deadline)
    notes.append(f"{handle.instance} stays prepared for the {deadline - app.clock():.0f}s "
                 "left until its deadline")
    return True


def after_restart(app: App, notes: list[str],
                  schedule: Callable[[str, Callable[[Report], Awaitable[object]], float],
                                     None]) -> None:
    """After reconcile: a candidate adopted as prepared gets next.sock and its one timer
    back; a prepared.json whose candidate was not (dead, expired, an interrupted job) is
    recorded (prepare_expired past its deadline, else prepare_abandoned) and removed."""
    prepared = app.prepared
    if prepared is not None:
        replace_symlink(app.root.next_sock, prepared.candidate.listener.name)
        schedule(f"abort {prepared.release}", lambda _report: expire(app, prepared),
                 max(0.0, prepared.deadline - app.clock()))
        return
    recorded = _recorded(app)
    if recorded is None:
        return
    release, candidate, deadline = recorded
    expired = 0 < deadline <= app.clock()
    app.store.record("prepare_expired" if expired else "prepare_abandoned", release=release,
                     candidate=candidate, who="relman (daemon restarted)")
    prepared_path(app).unlink(missing_ok=True)
    notes.append(f"prepared candidate {candidate or '?'} of {release or '?'} stopped: "
                 f"{'its deadline passed' if expired else 'not adoptable'} while the daemon "
                 "was down")

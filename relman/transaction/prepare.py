"""A prepared candidate (DESIGN section 9, issue 10): `relman deploy REF --prepare` runs a
deploy's fetch, build, release phase, health check and nginx preview, then stops short of
the switch. The healthy candidate stays on run/next.sock, recorded in state/prepared.json
(release id, candidate instance, deadline), until `relman abort ID` or swap.prepare_timeout
stops it. `relman rollback [RELEASE] --prepare` leaves a rollback's candidate the same way.
Either takes the release's warm instance over as the candidate when it runs, as a
deploy's swap reuses it. hostside.py has the jobs a fleet coordinator runs, done when
their release is live or prepared already.

`relman switch ID` runs the swap's steps 4 to 7 for it (swap() with *prepared*), after a
fresh health check of the candidate; `relman switch ID --keep-warm SECONDS` keeps the old
release warm at least that long (a fleet coordinator switches hosts back without a start).

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
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple, TypeVar

import structlog

from relman.atomic import replace_symlink, write_json_atomic
from relman.config import HealthConfig
from relman.errors import LockHeld, UsageError
from relman.journal import JournalEntry, Step
from relman.releases import Manifest
from relman.results import AbortResult, DeployResult
from relman.supervisor import ServerHandle, ServerState
from relman.supervisor.health import in_range, probe_socket
from relman.transaction.jobs import Report
from relman.transaction.runstate import Adopted, Role
from relman.transaction.swap import healthy_candidate, preview, still_healthy, swap

if TYPE_CHECKING:
    from pathlib import Path

    from relman.transaction.app import App

log = structlog.get_logger(__name__)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Prepared:
    """The prepared candidate: its release, its server, the time (epoch) it expires,
    whether it is a rollback's (`rollback --prepare`: its switch is a rollback), and
    whether its release phase ran (not with --no-release-phase)."""

    release: str
    sha: str
    candidate: ServerHandle
    deadline: float
    rollback: bool = False
    release_phase: bool = True


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
                          report: Report, args: Mapping[str, object], *, internal: bool) -> T:
    """*work*, the daemon's *job*, unless a candidate is prepared and the job is no switch
    or abort of it: a job asked for is refused; one of the daemon's own (*internal*: a
    crash restart of the live server, an automatic rollback) aborts the candidate first,
    since the live server comes before a candidate, and its links would move anyway.
    A prepare or build-only job (*args*) sees for itself (hostside.py): of the prepared
    release, it is done already."""
    if args.get("prepare") or args.get("build_only"):
        return await work(report)
    if app.prepared is not None and not job.startswith(("abort ", "switch ")):
        if not internal:
            refuse_while_prepared(app, job)
        await abort(app, app.prepared.release, f"relman ({job})")
    return await work(report)


async def switch(app: App, release: str, who: str, report: Report, *,
                 keep_warm: float | None = None) -> DeployResult:
    """`relman switch RELEASE`: steps 4 to 7 of the swap for the prepared candidate, after
    it answers its health check again. Any failure leaves the live release serving and
    stops the candidate (swap's abandon): it is no longer prepared either way. The old
    release is kept warm at least *keep_warm* seconds (swap.keep_warm if longer): a fleet
    coordinator asks for the time it needs to switch back, never for less than the host's
    own rollback window."""
    prepared = _the_prepared(app, release, "switch")
    if keep_warm is not None and not (isinstance(keep_warm, (int, float))
                                      and 0 <= keep_warm < float("inf")):
        raise UsageError(f"switch {release}: keep_warm {keep_warm!r}: not a number >= 0")
    if keep_warm is not None:
        keep_warm = max(keep_warm, app.config.swap.keep_warm)
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
    app.jobs.finish("rolled_back" if prepared.rollback else "deployed", report, manifest,
                    ref=manifest.ref, who=who, prepared=True)
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


class LiveAlready(Exception):
    """The release to prepare is live already: nothing to start (hostside.py answers
    live=True). Never a RelmanError: it fails nothing."""

    def __init__(self, manifest: Manifest) -> None:
        super().__init__(manifest.id)
        self.manifest = manifest


async def prepare(app: App, ref: str, who: str, report: Report, *,
                  release_phase: bool = True) -> Prepared:
    """Fetch *ref*, build it, run its release phase (unless not *release_phase*), start a
    healthy candidate and preview it on next.sock; leave it there, prepared. LiveAlready,
    before anything is built, when *ref*'s release is live."""
    app.jobs.begin(JournalEntry(job="deploy", ref=ref, who=who))

    async def built() -> Manifest:
        manifest = await app.fetch_and_build(ref, who, report, release_phase=release_phase,
                                             before_build=lambda m: _stop_if_live(app, m))
        return app._settings_changed(manifest, app.live_manifest(), "deploy", who, report)

    return await _leave_prepared(app, built, ref, who, report, release_phase=release_phase)


async def prepare_rollback(app: App, manifest: Manifest, who: str, report: Report
                           ) -> Prepared:
    """`rollback --prepare`: *manifest*'s candidate (its warm instance, taken over, or a
    new one started with the settings it ran with), healthy and previewed on next.sock;
    left there, prepared. No fetch, no build, no release phase."""
    app.jobs.begin(JournalEntry(job="rollback", release=manifest.id, who=who,
                                previous_release=app.store.live_id() or ""))

    async def target() -> Manifest:
        return manifest

    return await _leave_prepared(app, target, manifest.ref, who, report, rollback=True)


async def _leave_prepared(app: App, target: Callable[[], Awaitable[Manifest]], ref: str,
                          who: str, report: Report, *, rollback: bool = False,
                          release_phase: bool = True) -> Prepared:
    """The job begun: *target*'s release gets a healthy candidate, previewed on next.sock
    and recorded as prepared; any failure stops the candidate and fails the job."""
    candidate: ServerHandle | None = None
    try:
        manifest = await target()
        health = _preparable(app, manifest)
        entry = app.journal.entry
        app.journal.step(entry.step if entry else Step.BEGUN, release=manifest.id,
                         previous=app.live.instance if app.live else "")
        candidate = _take_warm(app, manifest)  # as a deploy's swap reuses it
        if candidate is not None:
            detail = f"{candidate.instance} was warm: taken over as the candidate"
            await still_healthy(candidate, health, report)
        else:
            candidate, detail = await healthy_candidate(app, manifest, health, report,
                                                        reuse_warm=False)
        app.jobs.step(Step.HEALTHY, report, detail, candidate=candidate.instance)
        await preview(app, candidate, health, report)
        prepared = Prepared(manifest.id, manifest.sha, candidate,
                            app.clock() + app.config.swap.prepare_timeout, rollback,
                            release_phase)
        write_json_atomic(prepared_path(app), {
            "release": prepared.release, "candidate": candidate.instance,
            "deadline": prepared.deadline, "rollback": rollback,
            "release_phase": release_phase})
    except LiveAlready:
        app.jobs.end()  # nothing was begun for it: no history line, no failure
        raise
    except BaseException as e:
        if candidate is not None:
            await _stop_candidate(app, candidate)
        app.jobs.failed(e, report)
        raise
    app.prepared = prepared
    app.store.record("prepared", release=manifest.id, sha=manifest.sha, ref=ref, who=who,
                     candidate=candidate.instance, deadline=round(prepared.deadline, 3),
                     **({"rollback": True} if rollback else {}))
    app.jobs.end()
    report("prepared", f"{manifest.id} is prepared on next.sock for "
           f"{app.config.swap.prepare_timeout:g}s")
    return prepared


def _take_warm(app: App, manifest: Manifest) -> ServerHandle | None:
    """*manifest*'s warm instance, if it runs, as the candidate: its keep_warm window ends
    (no timer stops it now) and the record calls it a candidate, so neither the window nor
    a later warm server stops it; the prepared deadline is its only timer."""
    warm = app.warm.server(manifest.id)
    if warm is None or not warm.alive:
        return None
    app.warm.cancel()
    app.record.submit(Adopted(warm.instance, warm.release, Role.CANDIDATE), strict=True)
    warm.advance(ServerState.HEALTHY)  # checked again before it counts as healthy
    return warm


def _stop_if_live(app: App, manifest: Manifest) -> None:
    """Before building: a release that is live already is no candidate (LiveAlready)."""
    if app.live_release() == manifest.id:
        raise LiveAlready(manifest)


def _preparable(app: App, manifest: Manifest) -> HealthConfig:
    """The [health] *manifest*'s candidate is checked with; a UsageError when there is no
    candidate to prepare."""
    settings = app.store.settings(manifest)
    if settings.server.kind == "none":
        raise UsageError('--prepare: server.kind = "none": no candidate to prepare')
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


class _Recorded(NamedTuple):
    """What state/prepared.json says."""

    release: str
    candidate: str  # its instance
    deadline: float
    rollback: bool
    release_phase: bool  # a file from before it was recorded: True


def _recorded(app: App) -> _Recorded | None:
    """state/prepared.json; None when there is none; ("", "", 0, False, True) when it is
    unreadable."""
    try:
        data = json.loads(prepared_path(app).read_text())
    except FileNotFoundError:
        return None
    except ValueError:
        data = None
    fields = data if isinstance(data, dict) else {}
    deadline = fields.get("deadline")
    return _Recorded(str(fields.get("release", "")), str(fields.get("candidate", "")),
                     float(deadline) if isinstance(deadline, (int, float)) else 0.0,
                     fields.get("rollback") is True, fields.get("release_phase") is not False)


async def readopt(app: App, handle: ServerHandle, interrupted: bool, notes: list[str]
                  ) -> bool:
    """After a daemon restart: *handle*, adopted and not live, is prepared again when
    state/prepared.json names it, its deadline is ahead, no job was interrupted, and it
    answers its health check. True if so (it must not be stopped)."""
    recorded = _recorded(app)
    if interrupted or recorded is None or recorded.candidate != handle.instance:
        return False
    release, deadline = recorded.release, recorded.deadline
    if deadline <= app.clock() or not handle.alive:
        return False
    health = app.release_health(release)
    probe = await probe_socket(handle.listener, protocol=handle.protocol, path=health.path,
                               timeout=5)
    if not in_range(probe.status, health.expect) or not handle.alive:
        return False
    app.prepared = Prepared(release, app.store.get(release).sha, handle, deadline,
                            recorded.rollback, recorded.release_phase)
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
    release, candidate, deadline = recorded.release, recorded.candidate, recorded.deadline
    expired = 0 < deadline <= app.clock()
    app.store.record("prepare_expired" if expired else "prepare_abandoned", release=release,
                     candidate=candidate, who="relman (daemon restarted)")
    prepared_path(app).unlink(missing_ok=True)
    notes.append(f"prepared candidate {candidate or '?'} of {release or '?'} stopped: "
                 f"{'its deadline passed' if expired else 'not adoptable'} while the daemon "
                 "was down")

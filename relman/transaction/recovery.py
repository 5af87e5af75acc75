"""Putting things right: reconcile after a daemon restart, restart crashed servers, roll back
a release that crash-loops right after its switch."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

import structlog

from relman.atomic import read_link, replace_symlink
from relman.errors import RelmanError, UnknownRelease
from relman.releases import ReleaseState
from relman.supervisor import ServerHandle, ServerState
from relman.supervisor.drain import wait_drained
from relman.supervisor.health import in_range, probe_socket
from relman.supervisor.restart import Exit, RestartPolicy, decide, quick_exits
from relman.transaction import prepare
from relman.transaction.app import App, Report
from relman.transaction.interrupted import AUTO_WHO, undo_interrupted_job
from relman.transaction.repair import relink_current, set_aside_unreadable_state
from relman.transaction.runstate import (
    Adopted,
    Gone,
    Relinked,
    Role,
    RunState,
    Settled,
    on_probation,
    warm_left,
)

log = structlog.get_logger(__name__)

# Live checks that must fail in a row, within swap.verify_window of a switch, before the
# daemon rolls the release back (one failed check is a blip, three are a broken release).
LIVE_CHECK_FAILURES: Final = 3

Schedule = Callable[[str, Callable[[Report], Awaitable[Any]], float], None]
Spawn = Callable[[Callable[[], Awaitable[Any]], float], None]


async def reconcile(app: App, report: Report) -> list[str]:
    """After a daemon restart: adopt servers whose identity checks out, undo the job a crash
    interrupted, and make sure run/app.sock leads to a running server. Unreadable state is
    set aside first: it never stops the daemon, and neither does a full disk."""
    current_set_aside, notes = set_aside_unreadable_state(app)
    before = app.record.state  # what the previous daemon recorded
    adopted = await _adopt(app, notes)
    live_name = read_link(app.root.app_sock)
    live = next((h for h in adopted.values() if h.is_web and h.listener.name == live_name),
                None)
    interrupted = app.journal.unfinished() is not None
    try:
        await undo_interrupted_job(app, notes)
    except RelmanError as e:  # a full disk: the daemon starts all the same, and serves
        log.warning("reconcile.undo_failed", error=e.message)
        notes.append(f"could not finish undoing the interrupted job: {e.message}")
    _take_live(app, live, current_set_aside, notes)
    if app.live is None and app.store.live_id() is not None:  # serving first, then tidying
        try:
            if await app.start(report) is not None:  # None: it has no web server
                notes.append("the live release's server was not running: started it")
        except RelmanError as e:
            notes.append(f"could not start the live release: {e.message}")
    for handle in adopted.values():
        if handle is not live and handle.is_web and \
                not await prepare.readopt(app, handle, interrupted, notes):
            await _keep_or_stop(app, handle, before, interrupted, notes)
    await _converge_processes(app, notes)
    return notes


async def _converge_processes(app: App, notes: list[str]) -> None:
    """The live release's processes run at their counts (adopted ones kept, same pids);
    any other release's (a handover the crash interrupted) are stopped."""
    try:
        manifest = app.live_manifest()
    except RelmanError as e:
        notes.append(f"processes: {e.message}")
        return
    try:
        async with app.processes.lock:
            if manifest is None:
                change = await app.processes.converge_none()
            else:
                change = await app.processes.converge(manifest)
        await app.processes.settle(change)
    except RelmanError as e:
        notes.append(f"could not start the live release's processes: {e.message}")
        return
    if change.started or change.stopped:
        notes.append(f"processes: started {len(change.started)}, stopped "
                     f"{len(change.stopped)}")


def _take_live(app: App, live: ServerHandle | None, current_set_aside: bool,
               notes: list[str]) -> None:
    """The adopted server run/app.sock leads to is the live one; `current` follows it."""
    if live is not None and not live.alive:  # it died while the daemon looked around
        live = None
    if live is not None:
        # run/app.sock is what nginx follows: its server is the live one, whatever the
        # record said (a daemon killed between the record and the link).
        live.advance(ServerState.LIVE)
        app.record.submit(Adopted(live.instance, live.release, Role.LIVE))
        app.record.submit(Relinked(live.release))
        app.derive_links(app.record.state)  # current too, if it crashed between the two
        replace_symlink(app.root.next_sock, live.listener.name)
        try:
            app.store.live_manifest()  # one that was set aside is rebuilt now
        except RelmanError as e:
            notes.append(e.message)
    elif current_set_aside:
        notes.append(relink_current(app))
    elif not app.record.state.linked and (current := app.store.live_id()) is not None:
        app.record.submit(Relinked(current))  # a record older than this release of relman


async def _keep_or_stop(app: App, handle: ServerHandle, before: RunState, interrupted: bool,
                        notes: list[str]) -> None:
    """An adopted server that is not live stays warm for what is left of its window (the
    record said so, and no job was interrupted), or is drained and stopped."""
    now = app.clock()
    left = min(warm_left(before, handle.instance, now), app.config.swap.keep_warm)
    if not interrupted and left > 0 and await _still_warm(app, handle):
        app.warm.keep(handle, left, until=now + left)  # the deadline found, not a new one
        notes.append(f"keeping {handle.instance} warm for the {left:.0f}s left of its window")
        return
    notes.append(f"stopping {handle.instance}: not live")
    # It may have been live a moment ago: let nginx's queued connections through first.
    await wait_drained(handle.listener, timeout=app.config.swap.drain_timeout)
    await app.stop_server(handle)


async def _adopt(app: App, notes: list[str]) -> dict[str, ServerHandle]:
    """Adopt the recorded instances that run; what else was ended goes into the history.
    The run record then lists exactly the adopted instances."""
    adoption = await app.supervisor.adopt_all(app.config.swap.stop_timeout)
    for note in adoption.notes:
        notes.append(note)
        app.store.record("process_reconciled", detail=note)
    adopted = {h.instance: h for h in adoption.handles}
    for instance in app.record.state.instances:
        if instance.name not in adopted:
            app.record.submit(Gone(instance.name))
    for handle in adopted.values():
        known = app.record.state.get(handle.instance)
        if not handle.is_web:  # converge decides which stay
            app.record.submit(Adopted(handle.instance, handle.release, Role.LIVE,
                                      handle.process, handle.index))
            handle.advance(ServerState.LIVE)
        elif known is None:  # spawned by a daemon that died before it recorded it
            app.record.submit(Adopted(handle.instance, handle.release, Role.CANDIDATE))
        elif known.role is Role.LIVE:  # live only if run/app.sock still leads to it
            app.record.submit(Adopted(handle.instance, handle.release, Role.RETIRING))
    return adopted


async def _still_warm(app: App, handle: ServerHandle) -> bool:
    """An adopted server, not live, with time left as the warm release, may stay warm: its
    release is built, and it answers its health check."""
    other = app.warm.server()  # the record may already name this one: it was warm before
    if (other is not None and other is not handle) or handle.release == app.store.live_id():
        return False
    try:
        manifest = app.store.get(handle.release)
    except UnknownRelease:
        return False
    if manifest.state is not ReleaseState.BUILT:
        return False
    health = app.release_health(handle.release)  # the [health] it ran with
    probe = await probe_socket(handle.listener, protocol=handle.protocol, path=health.path,
                               timeout=5)
    if not in_range(probe.status, health.expect) or not handle.alive:
        return False
    handle.advance(ServerState.WARM)
    return True


class CrashRecovery:
    """Restart policy for the live server, with crash-loop detection and auto-rollback."""

    def __init__(self, app: App, schedule: Schedule, spawn: Spawn) -> None:
        self.app, self.schedule, self.spawn = app, schedule, spawn
        self.process_exits: dict[tuple[str, str], list[Exit]] = {}  # (release, name)
        self.exits: list[Exit] = []
        self.release = ""
        self.looping = ("", "")  # (release, what a crash loop of it is): see crash_loop
        self.live_failures = 0
        self.watched_switch = ("", 0.0)  # the switch the live check failures belong to
        # The switch whose automatic rollback is scheduled or running. It is settled on disk
        # only by the rollback's own switch, or when the rollback cannot be done: a daemon
        # that dies in between still owes the release its rollback.
        self.requested = ("", 0.0)
        app.on_live_crash = self.on_live_crash
        self.changed = asyncio.Event()  # the run record changed: watch_live waits on it
        app.record.on_change = self.changed.set
        app.on_process_crash = self.on_process_crash

    @property
    def crash_loop(self) -> str:
        """What status and STATUS say while the live release crash-loops (not once over)."""
        release, what = self.looping
        return what if release and release == self.app.store.live_id() else ""

    def on_probation(self) -> bool:
        """Whether the live release may still be rolled back automatically."""
        app, state = self.app, self.app.record.state
        return state.switch.key != self.requested and on_probation(
            state, app.clock(), app.config.swap.verify_window)

    async def watch_live(self) -> None:
        """Within swap.verify_window of a switch, GET health.path every live_check_interval;
        outside it, no timer: it waits for a change of the run record (a switch)."""
        while True:
            if not self.on_probation():
                self.changed.clear()
                await self.changed.wait()
                continue
            await asyncio.sleep(self.app.config.swap.live_check_interval)
            try:
                await self.check_live_once()
            except Exception:  # a bad pass must not end the watch for the daemon's life
                log.exception("live_check.crashed")

    def request_rollback(self, release: str, reason: str) -> None:
        """Schedule the one automatic rollback this switch gets, whatever its outcome."""
        switch = self.requested = self.app.record.state.switch.key
        self.schedule("auto-rollback",
                      lambda report: self.auto_rollback(release, switch, reason, report), 0.0)

    async def check_live_once(self) -> None:
        app = self.app
        live = app.live
        switch = app.record.state.switch.key
        if (live is None or not live.alive or app.journal.entry is not None
                or not self.on_probation()):
            self.live_failures = 0  # a job in progress, a crash (after_exit's) or no probation
            return
        if switch != self.watched_switch:
            self.watched_switch, self.live_failures = switch, 0
        # Through run/app.sock, not nginx: whether the release works, not whether nginx does.
        # With the [health] the release runs with (a rollback target's own).
        health = app.release_health(live.release)
        probe = await probe_socket(app.root.app_sock, protocol=live.protocol,
                                   path=health.path, timeout=10)
        if in_range(probe.status, health.expect) or app.live is not live:
            self.live_failures = 0
            return
        self.live_failures += 1
        detail = probe.status or probe.detail
        log.warning("live_check.failed", release=live.release, failures=self.live_failures,
                    detail=detail)
        if self.live_failures < LIVE_CHECK_FAILURES:
            return
        self.live_failures = 0
        reason = (f"{live.release} failed its live check {LIVE_CHECK_FAILURES} times in a row "
                  f"after its switch ({health.path}: {detail})")
        if app.store.rollback_target() is None:
            app.store.record("live_check_failing", release=live.release, reason=reason)
            return
        self.request_rollback(live.release, reason)

    def note_exit(self, release: str, started: float, returncode: int | None) -> None:
        if release != self.release:
            self.release, self.exits = release, []
        self.exits.append(Exit(started, time.monotonic(), returncode))
        del self.exits[:-20]

    async def on_live_crash(self, handle: ServerHandle) -> None:
        self.note_exit(handle.release, handle.started_mono, handle.returncode)
        self.after_exit(handle.release)

    def after_exit(self, release: str) -> None:
        """Decide and schedule what comes after the live release's server exited."""
        app = self.app
        decision = decide(self.exits, RestartPolicy(app.config.restart.policy),
                          app.config.restart.backoff_max)
        log.warning("server.exit_decided", release=release, restart=decision.restart,
                    delay=decision.delay, crash_loop=decision.crash_loop,
                    reason=decision.reason)
        app.store.record("server_crashed", release=release, reason=decision.reason,
                         restart=decision.restart, delay=decision.delay)
        if decision.crash_loop:
            self.looping = (release, f"{release} crash-loops: {quick_exits(self.exits)} "
                            "exits within seconds of starting")
            app.store.record("crash_loop", release=release, detail=self.looping[1])
        target = app.store.rollback_target()
        if decision.crash_loop and self.on_probation() and target is not None:
            self.request_rollback(release, f"{release} crash-looped right after its switch")
        elif decision.restart:
            self.schedule(f"restart {release}", self.restart_live, decision.delay)

    def settle(self, switch: tuple[str, float]) -> None:
        """*switch* had its one automatic rollback, done or not: none again, even after a
        daemon restart."""
        self.app.record.submit(Settled(switch))

    async def auto_rollback(self, bad: str, switch: tuple[str, float], reason: str,
                            report: Report) -> Any:
        """Mark *bad* failed (never a target, never kept warm) and swap to the
        known-good release live before it, unless a job changed the live release meanwhile."""
        app = self.app
        target = app.store.rollback_target()
        if (app.store.live_id() != bad or app.record.state.switch.key != switch
                or target is None):
            why = "no known-good release before it" if target is None else \
                "another job changed the live release first"
            app.store.record("auto_rollback_skipped", release=bad, reason=reason, why=why)
            self.settle(switch)
            return {"skipped": why}
        app.store.record("auto_rollback", release=target.id, previous=bad, reason=reason)
        try:  # auto: the bad release is never kept warm, and the switch is settled
            manifest = await app.rollback(target.id, f"{AUTO_WHO}{reason})", report,
                                          auto=True)
        except RelmanError:
            self.settle(switch)
            if app.live is None or not app.live.alive:  # a crash loop, and no way back
                self.schedule(f"restart {bad}", self.restart_live, 1.0)
            raise
        # Only now: while it served, its tree must never be rebuilt by a redeploy.
        app.store.mark(app.store.get(bad), ReleaseState.FAILED, error=reason)
        return {"release": manifest.id, "previous": bad}

    async def restart_live(self, report: Report) -> Any:
        """Start the live release again (one attempt; a failure schedules the next)."""
        app = self.app
        if app.live is not None and app.live.alive:
            return {"release": app.live.release}
        if app.stopped:  # `relman stop` came after the crash: it stays down
            return {}
        release = app.store.live_id()
        if release is None:
            return {}
        started = time.monotonic()
        try:
            handle = await app.start(report)
        except RelmanError as e:
            log.warning("server.restart_failed", release=release, error=e.message)
            self.note_exit(release, started, None)
            self.after_exit(release)
            return {"release": release, "error": e.message}
        if handle is not None:
            app.processes.restarts[(release, handle.process, handle.index)] += 1
        pid = handle.pid if handle is not None else 0
        app.store.record("server_restarted", release=release, pid=pid)
        return {"release": release, "pid": pid}

    async def on_process_crash(self, handle: ServerHandle) -> None:
        """A live process instance exited: restart it per [restart] with backoff; a crash
        loop right after its release's switch rolls the release back, as the server's."""
        app = self.app
        release, name = handle.release, handle.process
        exits = self.process_exits.setdefault((release, name), [])
        exits.append(Exit(handle.started_mono, time.monotonic(), handle.returncode))
        del exits[:-20]
        decision = decide(exits, RestartPolicy(app.config.restart.policy),
                          app.config.restart.backoff_max)
        log.warning("process.exit_decided", release=release, process=name, index=handle.index,
                    restart=decision.restart, delay=decision.delay,
                    crash_loop=decision.crash_loop, reason=decision.reason)
        app.store.record("process_crashed", release=release, process=name,
                         index=handle.index, reason=decision.reason,
                         restart=decision.restart, delay=decision.delay)
        if decision.crash_loop:
            self.looping = (release, f"{release} process {name} crash-loops: "
                            f"{quick_exits(exits)} exits within seconds of starting")
            app.store.record("crash_loop", release=release, process=name,
                             detail=self.looping[1])
            if (self.on_probation() and app.store.live_id() == release
                    and app.store.rollback_target() is not None):
                self.request_rollback(release, f"process {name} of {release} crash-looped "
                                      "right after its switch")
                return
        if decision.restart:
            index = handle.index
            self.spawn(lambda: self.restart_process(release, name, index), decision.delay)

    async def restart_process(self, release: str, name: str, index: int) -> None:
        """Start instance *index* of *name* again, if *release* is still live and the slot
        is still empty (a handover, a scale or a stop may have come first)."""
        app = self.app
        async with app.processes.lock:
            if app.store.live_id() != release or app.record.state.linked != release \
                    or app.stopped:
                return
            change = await app.processes.converge(app.store.get(release),
                                                  slots=[(name, index)])
        if change.started:
            app.processes.restarts[(release, name, index)] += 1
            app.store.record("process_restarted", release=release, process=name, index=index,
                             instance=change.started[0])
        try:
            await app.processes.settle(change)
        except RelmanError as e:  # it exited again: that exit is a crash of its own
            log.warning("process.restart_failed", release=release, process=name, index=index,
                        error=e.message)

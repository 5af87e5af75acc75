"""The daemon: one run() loop driven by the control socket, signals and server exits."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, TypeVar

import sdnotify
import structlog

from relman import __version__, results
from relman.atomic import replace_symlink
from relman.config import Config, load_config
from relman.control import KEEPALIVE, ControlServer, Send, scale_counts
from relman.errors import LockHeld, RelmanError, StateWriteFailed, UsageError, writing
from relman.filewatch import watch_files
from relman.lock import Busy, FileLock
from relman.transaction import App, CrashRecovery, Observer, Report, hostside, prepare, reconcile
from relman.transaction.repair import set_aside_current
from relman.who import who_of

log = structlog.get_logger(__name__)
T = TypeVar("T")
_INTERNAL: Final = {"wait": True}  # the args of the daemon's own jobs (schedule_job)


class Daemon:
    """Owns one app's servers and runs its jobs one at a time."""

    def __init__(self, config: Config) -> None:
        self.app = App(config)
        self.config_bytes = b""  # the config file as last loaded
        with contextlib.suppress(OSError):
            self.config_bytes = config.path.read_bytes()
        self.root = self.app.root
        self.notifier = sdnotify.SystemdNotifier()
        if self.notifier.socket is not None:
            # sdnotify sends with a blocking sendall(): a full notify queue (10 datagrams by
            # default) would stall the event loop. Drop a message rather than hang.
            self.notifier.socket.setblocking(False)
        self.stopping = asyncio.Event()
        self.started = time.time()
        self.daemon_lock = FileLock(self.root.daemon_lock)
        self.deploy_lock = FileLock(self.root.deploy_lock)
        self.job_mutex = asyncio.Lock()
        # Every job asked for and not yet ended, running or queued, in order: counted the
        # moment it is asked for, so two requests in one loop turn cannot both pass.
        self.pending: list[dict[str, str]] = []
        self.flip_set_aside = False  # a flip of current seen while jobs were pending
        self.control = ControlServer(self.root.control_sock, self.handle,
                                     self.root.crash_log)
        self.jobs: set[asyncio.Task[Any]] = set()
        self.recovery = CrashRecovery(self.app, self.schedule_job, self.spawn)
        self.observer = Observer(self.app, self.started)

    @property
    def config(self) -> Config:
        """The config the app runs with (the App owns it; a reload replaces it there)."""
        return self.app.config

    def notify(self, **fields: str) -> None:
        self.notifier.notify("\n".join(f"{k}={v}" for k, v in fields.items()))

    async def run(self) -> None:
        """Start, serve until SIGTERM, stop the app gracefully."""
        if not self.root.state.is_dir():
            raise UsageError(f"{self.root.root}: not initialised: run `relman init` first")
        try:
            _take(self.daemon_lock, {"pid": os.getpid(), "since": _now()})
        except Busy as e:
            raise LockHeld(f"another relman daemon runs for this app (pid "
                           f"{e.holder.get('pid', '?')})") from None
        loop = asyncio.get_running_loop()
        handlers: dict[int, Callable[[], None]] = {
            signal.SIGTERM: self.shut_down, signal.SIGINT: self.shut_down,
            signal.SIGHUP: self.reload_config,
        }
        for sig, handler in handlers.items():
            loop.add_signal_handler(sig, handler)
        notes = await reconcile(self.app, _ignore)
        prepare.after_restart(self.app, notes, self.schedule_job)
        for note in notes:
            log.info("daemon.reconciled", note=note)
        await self.control.start()
        log.info("daemon.started", app=self.config.app.name, version=__version__,
                 live=self.app.store.live_id(), pid=os.getpid())
        self.notify(READY="1", STATUS=self.status_line())
        watching = asyncio.create_task(watch_files(
            self.config.path, self.root.root, on_config=self.reload_config,
            on_current=self.current_flipped, stop=self.stopping))
        background = [asyncio.create_task(self.feed_watchdog()), watching,
                      asyncio.create_task(self.recovery.watch_live())]
        try:
            await self.stopping.wait()
        finally:  # cancelled too: the file watch's thread only ends when this is set
            self.stopping.set()
        self.notify(STOPPING="1", STATUS="stopping the app")
        for task in background:
            task.cancel()
        await self.control.close()
        for task in list(self.jobs):
            task.cancel()
        await self.app.stop("daemon shutdown")
        if self.app.supervisor.tracker.cgroups is not None:
            self.app.supervisor.tracker.cgroups.remove_base()
        self.daemon_lock.release()
        log.info("daemon.stopped")

    def shut_down(self) -> None:
        self.stopping.set()

    def refresh_config(self) -> None:
        """Before a deploy or a restart: the config file as it is now, if it changed since
        it was loaded (an edit made just before the command counts even when the file watch
        has not seen it yet)."""
        with contextlib.suppress(OSError):
            if self.config.path.read_bytes() != self.config_bytes:
                self.reload_config()

    def reload_config(self) -> None:
        """SIGHUP: load the config again; an invalid one is logged and the old one kept."""
        self.notify(RELOADING="1", MONOTONIC_USEC=str(int(time.monotonic() * 1e6)))
        try:
            self.config_bytes = self.config.path.read_bytes()
            config = load_config(self.config.path)
        except (RelmanError, OSError) as e:
            log.warning("config.reload_failed", error=getattr(e, "message", str(e)))
        else:
            self.app.reload(config)
            self.recovery.changed.set()  # a longer swap.verify_window may reopen a probation
            log.info("config.reloaded", path=str(config.path))
        self.notify(READY="1", STATUS=self.status_line())

    async def feed_watchdog(self) -> None:
        """WATCHDOG=1 at half of WATCHDOG_USEC, from the event loop: a hung loop is caught."""
        usec = int(os.environ.get("WATCHDOG_USEC", "0") or 0)
        if usec <= 0:
            return
        while True:
            self.notify(WATCHDOG="1")
            await asyncio.sleep(usec / 2e6)

    def status_line(self) -> str:
        return self.observer.status_line(self.recovery.crash_loop)

    def spawn(self, work: Callable[[], Awaitable[object]], delay: float = 0.0) -> None:
        """Run *work* in the background after *delay* seconds, not as a job (a crash
        restart of a process must not wait behind a build); nothing once stopping."""
        async def run() -> None:
            try:
                await work()
            except Exception:
                log.exception("task.failed")
            self.notify(STATUS=self.status_line())

        def start() -> None:
            if self.stopping.is_set():
                return
            task = asyncio.create_task(run())
            self.jobs.add(task)
            task.add_done_callback(self.jobs.discard)

        asyncio.get_running_loop().call_later(delay, start)

    def schedule_job(self, what: str, work: Callable[[Report], Awaitable[object]],
                     delay: float) -> None:
        """Run *work* as a job after *delay* seconds, queued behind any running job."""
        async def run() -> None:
            with contextlib.suppress(RelmanError):  # job() has logged it
                await self.job(what, "relman", _INTERNAL, _ignore, work)

        def spawn() -> None:
            if self.stopping.is_set():  # shutting down: start nothing new
                return
            task = asyncio.create_task(run(), name=what)
            self.jobs.add(task)
            task.add_done_callback(self.jobs.discard)

        asyncio.get_running_loop().call_later(delay, spawn)

    def current_flipped(self) -> None:
        """`current` now names another release than relman pointed it at: swap to it,
        health-gated (a Capistrano-style tool flipped it). Events of relman's own flips come
        late (debounced), maybe after the live server crashed: they match app.linked."""
        target = self.app.store.live_id()
        if target is None and self.app.linked and set_aside_current(self.app):
            # Another tool made a directory of it: back to what serves, or a crash restart
            # would find nothing to start.
            replace_symlink(self.root.current, Path("releases") / self.app.linked)
            return
        if target is None or target == self.app.linked:
            return
        if self.pending:
            self.flip_set_aside = True  # looked at again when the jobs end
            return
        log.info("current.flipped_externally", release=target)
        self.schedule_job(f"swap to {target} (current flipped)", self._follow_flip, 0.0)

    async def _follow_flip(self, report: Report) -> results.RollbackResult | None:
        target = self.app.store.live_id()
        linked = self.app.linked
        if target is None or target == linked:  # a job queued first made it moot
            return None
        try:
            return await self._rollback(target, "external flip of current", report)
        except RelmanError as e:
            # Refused (no such release, a failed one, unhealthy): `current` goes back to what
            # serves, or a crash restart would start the refused release. Tried once only.
            if linked is not None and self.app.store.live_id() == target:
                replace_symlink(self.root.current, Path("releases") / linked)
                self.app.store.record("flip_refused", release=target, live=linked,
                                      error=e.message)
            raise

    async def handle(self, request: dict[str, Any], send: Send, peer: tuple[int, int]
                     ) -> results.Result:
        """Dispatch one control request."""
        command = str(request.get("command", ""))
        args = request.get("args") or {}
        client = request.get("client") or {}
        who = who_of(client, peer[0])
        commands: dict[str, Callable[[], Awaitable[results.Result]]] = {
            "ping": self._ping,
            "status": lambda: self.observer.status(self.recovery.crash_loop),
            "ps": self.observer.ps,
            "scale": lambda: self.job("scale", who, args, send,
                                      lambda rep: self._scale(args, who, rep)),
            "deploy": lambda: self.job(f"{'build' if args.get('build_only') else 'deploy'} "
                                       f"{args.get('ref')}", who, args, send,
                                       lambda rep: self._deploy(str(args.get("ref", "")), who,
                                                                rep, args)),
            "switch": lambda: self.job(f"switch {args.get('release')}", who, args, send,
                                       lambda rep: prepare.switch(
                                           self.app, str(args.get("release")), who, rep,
                                           keep_warm=args.get("keep_warm"))),
            "abort": lambda: self.job(f"abort {args.get('release')}", who, args, send,
                                      lambda _rep: prepare.abort(self.app,
                                                                 str(args.get("release")), who)),
            "rollback": lambda: self.job("rollback", who, args, send, lambda rep: (
                hostside.rollback_job(self.app, args.get("release") or None, who, rep,
                                      self.schedule_job)
                if args.get("prepare") else self._rollback(args.get("release"), who, rep))),
            "restart": lambda: self.job("restart", who, args, send,
                                        lambda rep: self._restart(who, rep, args.get("name"))),
            "start": lambda: self.job("start", who, args, send,
                                      lambda rep: self._start(who, rep)),
            "stop": lambda: self.job("stop", who, args, send, lambda _rep: self._stop(who)),
            "prune": lambda: self.job("prune", who, args, send, lambda _rep: self._prune()),
        }
        if command not in commands:
            raise UsageError(f"unknown control command {command!r}")
        return await commands[command]()

    async def job(self, what: str, who: str, args: dict[str, Any], send: Send,
                  work: Callable[[Report], Awaitable[T]]) -> T:
        """Run *work* under the deploy lock; it goes on if the client disconnects."""
        if self.pending and not args.get("wait"):
            holder = self.pending[0]
            raise LockHeld(f"another job holds the deploy lock: {holder['job']} by "
                           f"{holder['who']} since {holder['since']}",
                           hint="pass --wait to queue behind it")
        entry = {"job": what, "who": who, "since": _now()}
        self.pending.append(entry)

        def report(step: str, message: str) -> None:
            send(results.Progress(step=step, message=message).to_json())

        async def locked() -> T:
            try:
                async with self.job_mutex:
                    entry["since"] = _now()
                    # Never a blocking flock in the event loop: it would stop the control
                    # socket, crash restarts and probation. The mutex already serialises
                    # this daemon's jobs; the flock only keeps other processes out.
                    try:
                        _take(self.deploy_lock, {**entry, "pid": os.getpid()})
                    except Busy as e:
                        raise LockHeld(f"{e.path} is held by another process: "
                                       f"{e.holder or 'unknown'}") from None
                    self.notify(STATUS=f"{self.config.app.name}: {what}")
                    try:
                        with writing():  # a refused write the job did not name: exit 1
                            return await prepare.unless_prepared(
                                self.app, what, work, report, args, internal=args is _INTERNAL)
                    except RelmanError as e:  # the journal says why, not only the history
                        log.warning("job.failed", job=what, who=who, error=e.message)
                        raise
                    finally:
                        self.deploy_lock.release()
                        self.notify(STATUS=self.status_line())
            finally:
                self.pending = [e for e in self.pending if e is not entry]
                if self.flip_set_aside and not self.pending and not self.stopping.is_set():
                    self.flip_set_aside = False
                    self.current_flipped()

        task = asyncio.create_task(locked(), name=what)
        self.jobs.add(task)
        task.add_done_callback(self.jobs.discard)
        beat = asyncio.create_task(_keep_alive(send))  # queued or running: never silent
        try:
            return await asyncio.shield(task)
        finally:
            beat.cancel()

    async def _deploy(self, ref: str, who: str, report: Report, args: dict[str, Any]
                      ) -> results.DeployResult | results.PrepareResult | results.BuildResult:
        self.refresh_config()
        if args.get("prepare") or args.get("build_only"):
            return await hostside.deploy_job(self.app, ref, who, report, args, self.schedule_job)
        manifest = await self.app.deploy(ref, who, report)
        # Like Capistrano's cleanup, every deploy keeps the disk bounded (Kamal's is not).
        # A server still stopping counts as running: the next prune takes its release.
        pruned = results.PruneResult()
        try:
            pruned = await self._prune()
        except Exception as e:  # noqa: BLE001 - the release is live: a cleanup must not fail it
            log.warning("prune.failed", error=str(e))
            report("prune", f"prune failed (the deploy stands): {e}")
        if pruned.releases or pruned.venvs:
            report("prune", f"pruned {len(pruned.releases)} release(s) and "
                   f"{len(pruned.venvs)} virtualenv(s) beyond keep_releases = "
                   f"{self.config.app.keep_releases}")
        return results.DeployResult(release=manifest.id, sha=manifest.sha, ref=ref,
                                    switch_ms=self.app.switch_ms, pruned=pruned)

    async def _rollback(self, release: Any, who: str, report: Report) -> results.RollbackResult:
        manifest = await self.app.rollback(str(release) if release else None, who, report)
        return results.RollbackResult(release=manifest.id, sha=manifest.sha,
                                      switch_ms=self.app.switch_ms)

    async def _restart(self, who: str, report: Report, name: object
                       ) -> results.RestartResult:
        self.refresh_config()
        manifest = await self.app.restart(who, report, str(name) if name else None)
        return results.RestartResult(release=manifest.id, switch_ms=self.app.switch_ms)

    async def _scale(self, args: dict[str, Any], who: str, report: Report
                     ) -> results.ScaleResult:
        counts = scale_counts(args.get("counts"))
        change = await self.app.scale(counts, reset=bool(args.get("reset")), who=who,
                                      report=report)
        return results.ScaleResult(release=self.app.store.live_id(),
                                   counts=self.observer.counts(),
                                   started=change.started, stopped=change.stopped)

    async def _start(self, who: str, report: Report) -> results.StartResult:
        handle = await self.app.start(report, who=who)
        release = handle.release if handle else self.app.store.live_id() or ""
        return results.StartResult(release=release, pid=handle.pid if handle else 0)

    async def _stop(self, who: str) -> results.StopResult:
        await self.app.stop(who)
        return results.StopResult(stopped=True)

    async def _prune(self) -> results.PruneResult:
        return await self.app.prune()

    async def _ping(self) -> results.Pong:
        return results.Pong(pid=os.getpid(), version=__version__)


def _take(lock: FileLock, holder: dict[str, Any]) -> None:
    """Take *lock*, with *holder* written into it if the file system lets us: the record is
    for people and error messages, the flock is what excludes. A full disk must not keep
    the daemon from starting, or from restarting a crashed server."""
    try:
        lock.acquire(holder)
    except StateWriteFailed as e:
        log.warning("lock.unrecorded", path=str(lock.path), error=e.message)
        lock.acquire()


async def _keep_alive(send: Send) -> None:
    """A keepalive message every KEEPALIVE seconds: the CLI gives up on a daemon only after
    a silence (relman/client.py), and a long build step may print nothing for minutes."""
    while True:
        await asyncio.sleep(KEEPALIVE)
        send({"type": "keepalive"})


def _ignore(*_args: object) -> None:
    """No progress wanted (a report, a send)."""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def run_daemon(config_path: Path) -> None:
    """Entry point of `relman daemon`."""
    config = load_config(config_path)
    asyncio.run(Daemon(config).run())

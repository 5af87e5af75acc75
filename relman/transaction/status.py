"""What `relman status` and `relman ps` show: the daemon, the live release, every instance
(web server and processes) with its figures, the health of the live server, the job, and
the process counts wanted and running."""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import replace

from relman import __version__, results
from relman.errors import RelmanError
from relman.supervisor import ServerHandle
from relman.supervisor.figures import ProcessFigures
from relman.supervisor.health import in_range, probe_socket
from relman.transaction.app import App
from relman.transaction.runstate import Role


class Observer:
    """Reads figures off the event loop (psutil scans every process), one reading at a
    time: CPU % is measured between two readings."""

    def __init__(self, app: App, started: float) -> None:
        self.app, self.started = app, started
        self.figures = ProcessFigures()
        self.lock = asyncio.Lock()

    async def _lines(self) -> tuple[results.Figures | None, tuple[results.ServerLine, ...]]:
        """The daemon's own figures, and one line per instance (web first)."""
        app = self.app
        handles = sorted(app.supervisor.handles.values(),
                         key=lambda h: (not h.is_web, h.process, h.index, h.instance))
        async with self.lock:
            figures = await asyncio.to_thread(lambda: [
                self.figures.of(os.getpid(), with_children=False),
                *(self.figures.of(h.pid) for h in handles)])
        live, state = app.live, app.record.state
        lines = tuple(self._line(h, f, live=h is live if h.is_web else (
            (i := state.get(h.instance)) is not None and i.role is Role.LIVE))
                      for h, f in zip(handles, figures[1:], strict=True))
        return figures[0], lines

    def _line(self, handle: ServerHandle, figures: results.Figures | None, *,
              live: bool) -> results.ServerLine:
        line = handle.describe(figures, live=live)
        restarts = self.app.processes.restarts[(handle.release, handle.process, handle.index)]
        return replace(line, restarts=restarts) if restarts else line

    def counts(self) -> tuple[results.ProcessCount, ...]:
        """Per process type of the live release: wanted (settings or scale) and running."""
        app = self.app
        release = app.store.live_id()
        if release is None:
            return ()
        try:
            settings = app.store.settings(app.store.get(release))
        except RelmanError:
            return ()
        scaled = app.record.state.scaled
        return tuple(results.ProcessCount(
            name=name, wanted=count, running=len(app.processes.running(release, name)),
            scaled=name in scaled) for name, count in app.processes.counts(settings).items())

    async def ps(self) -> results.PsResult:
        _own, lines = await self._lines()
        return results.PsResult(release=self.app.store.live_id(), instances=lines,
                                counts=self.counts())

    async def status(self, crash_loop: str) -> results.Status:
        """Daemon, live release, instances (pids, workers, RSS, CPU, uptime), health, job."""
        app = self.app
        own, lines = await self._lines()
        health = None
        live = app.live
        if live is not None and live.alive:
            checks = app.release_health(live.release)  # the [health] it runs with
            probe = await probe_socket(live.listener, protocol=live.protocol,
                                       path=checks.path, timeout=5)
            health = results.Health(status=probe.status, detail=probe.detail,
                                    healthy=in_range(probe.status, checks.expect))
        entry = app.journal.entry
        target = app.store.rollback_target()
        own = own or results.Figures(workers=0, rss=0, cpu_percent=0.0,
                                     uptime=round(time.time() - self.started, 1))
        return results.Status(
            app=app.config.app.name,
            daemon=results.DaemonInfo(pid=os.getpid(), version=__version__, figures=own),
            live=live.release if live is not None and live.alive else None,
            current=app.store.live_id(),
            rollback_target=target.id if target else None,
            health=health,
            servers=lines,
            job=results.JobInfo(**entry.to_json()) if entry else None,
            crash_loop=crash_loop or None,
            processes=self.counts(),
            prepared=app.prepared.release if app.prepared else None,
            prepared_until=round(app.prepared.deadline, 3) if app.prepared else None,
        )

    def status_line(self, crash_loop: str) -> str:
        """sd_notify STATUS: the live release, its server and its process counts."""
        app = self.app
        name = app.config.app.name
        if crash_loop:
            return f"{name}: {crash_loop}"
        live = app.live
        counts = ", ".join(f"{c.name} {c.running}/{c.wanted}" for c in self.counts())
        if live is not None and live.alive:
            line = f"{name}: live {live.release} (pid {live.pid})"
        elif app.store.live_id() is not None and counts:
            line = f"{name}: live {app.store.live_id()} (no web server)"
        else:
            return f"{name}: no live server"
        return f"{line}; {counts}" if counts else line

"""Supervisor: the app server instances this daemon runs or adopted, and their exits."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import structlog

from relman.errors import Unhealthy
from relman.logs import tail_file
from relman.supervisor.adopt import Adoption, adopt_instances
from relman.supervisor.health import Probe, wait_healthy
from relman.supervisor.identity import WEB, check_unit
from relman.supervisor.server import ServerHandle, ServerSpec
from relman.supervisor.spawn import secure_socket, start_server
from relman.supervisor.states import ServerState
from relman.supervisor.stop import end_remnants, stop_server
from relman.supervisor.tracking import Tracker

log = structlog.get_logger(__name__)

OnCrash = Callable[[ServerHandle], Awaitable[None]]


class Supervisor:
    """Owns ServerHandles by instance name; reports unexpected exits to *on_crash*."""

    def __init__(self, run_dir: Path, log_dir: Path, tracker: Tracker,
                 on_crash: OnCrash | None = None) -> None:
        self.run_dir, self.log_dir, self.tracker = run_dir, log_dir, tracker
        self.on_crash = on_crash
        self.handles: dict[str, ServerHandle] = {}
        self._watchers: set[asyncio.Task[None]] = set()
        # instance-name prefix (release, process, index) -> the highest generation started
        self._generations: dict[str, int] = {}

    def next_instance(self, release: str, process: str = WEB, index: int = 1) -> str:
        """A fresh instance name: `<release>.<n>` for the web server, so that every
        generation has its own socket and pidfile path since gunicorn unlinks its socket path
        on exit (ANCHORS.md); `<release>.<process>.<index>.<n>` for instance *index* of a
        process. Generations are counted per (release, process, index)."""
        prefix = f"{release}." if process == WEB else f"{release}.{process}.{index}."
        names = [p.name.removesuffix(".pid") for p in self.run_dir.glob(f"{release}.*.pid")]
        names += [p.name.removesuffix(".sock") for p in self.run_dir.glob(f"{release}.*.sock")]
        names += [os.readlink(link).removesuffix(".sock") for link in
                  (self.run_dir / "app.sock", self.run_dir / "next.sock") if link.is_symlink()]
        names += list(self.handles)
        # Only names of this unit: `R.worker.1.3` is no generation of the web server `R.<n>`.
        used = {int(n[len(prefix):]) for n in names
                if n.startswith(prefix) and n[len(prefix):].isdigit()}
        used.add(self._generations.get(prefix, 0))  # a crashed one's files are gone
        self._generations[prefix] = max(used) + 1
        name = f"{prefix}{max(used) + 1}"
        check_unit(release, process, index, name)
        return name

    def _register(self, handle: ServerHandle) -> ServerHandle:
        self.handles[handle.instance] = handle
        task = asyncio.create_task(self._watch(handle), name=f"watch {handle.instance}")
        self._watchers.add(task)
        task.add_done_callback(self._watchers.discard)
        return handle

    async def _watch(self, handle: ServerHandle) -> None:
        await handle.exited.wait()
        if handle.expected_exit:
            return
        log.warning("server.crashed", instance=handle.instance, pid=handle.pid,
                    returncode=handle.returncode, state=str(handle.state))
        with contextlib.suppress(Exception):
            handle.advance(ServerState.CRASHED)
        # Its orphaned workers would go on accepting on its socket: end the whole instance.
        try:
            remnants = await end_remnants(self.tracker, handle.record)
        except Exception:  # crash handling (the restart) must go on whatever this met
            log.exception("server.remnants_failed", instance=handle.instance)
            remnants = 0
        if remnants:
            log.warning("server.remnants_killed", instance=handle.instance, killed=remnants)
        handle.pidfile.unlink(missing_ok=True)
        self.handles.pop(handle.instance, None)
        if self.on_crash is not None:
            await self.on_crash(handle)

    def start(self, spec: ServerSpec) -> ServerHandle:
        return self._register(start_server(spec, self.tracker))

    async def start_healthy(self, spec: ServerSpec, *, path: str, expect: tuple[int, int],
                            timeout: float) -> tuple[ServerHandle, Probe]:
        """Start *spec* and wait until healthy; on failure stop it and raise Unhealthy with
        the last lines of its output. The web server's only: a process has no health check."""
        if spec.socket is None:
            raise TypeError(f"{spec.instance}: a {spec.process} process has no health check")
        handle = self.start(spec)
        try:
            probe = await wait_healthy(handle, path=path, expect=expect, timeout=timeout)
            secure_socket(spec)
        except BaseException as e:
            await self.stop(handle, timeout=5)
            if isinstance(e, Unhealthy):
                e.tail = tail_file(spec.log, 40)
            raise
        if not handle.alive:  # it answered, then died: never HEALTHY
            await self.stop(handle, timeout=5)
            raise Unhealthy(f"{spec.instance} exited right after its health check",
                            tail=tail_file(spec.log, 40))
        handle.advance(ServerState.HEALTHY)
        return handle, probe

    async def stop(self, handle: ServerHandle, timeout: float) -> bool:
        try:
            return await stop_server(handle, timeout, self.tracker)
        finally:
            self.handles.pop(handle.instance, None)

    async def adopt_all(self, stray_timeout: float) -> Adoption:
        """Adopt every recorded instance that still runs, end what is left of the others,
        and stop the app's processes no record names (adopt.py)."""
        found = await adopt_instances(self.run_dir, self.log_dir, self.tracker, stray_timeout)
        for handle in found.handles:
            self._register(handle)
        return found

    def for_release(self, release: str, process: str | None = None) -> list[ServerHandle]:
        """The live handles of *release* (of its *process* only, if given)."""
        return [h for h in self.handles.values() if h.release == release and h.alive
                and (process is None or h.process == process)]

    def by_socket(self, socket: Path) -> ServerHandle | None:
        for handle in self.handles.values():
            if handle.socket == socket and handle.alive:
                return handle
        return None

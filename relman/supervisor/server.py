"""ServerHandle: one running app server instance, started by us or adopted after a restart."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from relman.results import Figures, ServerLine
from relman.supervisor.identity import InstanceRecord, ProcessIdentity
from relman.supervisor.states import ServerState, check_transition

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerSpec:
    """Everything needed to start one instance of a release's app server."""

    instance: str  # <release id>.<generation>: never two generations on one socket path
    release: str
    argv: tuple[str, ...]
    cwd: Path
    env: Mapping[str, str] = field(repr=False)  # never logged: it may hold secrets
    socket: Path
    pidfile: Path
    log: Path
    protocol: str = "http"
    socket_mode: int = 0o660
    socket_group: str = ""


class ServerHandle:
    """A running server: identity, pidfd exit watch and lifecycle state.

    Children and adopted processes are the same type: both are watched through a pidfd, so
    adoption after a daemon restart is not a special code path (STYLE practice 5).
    """

    def __init__(self, *, instance: str, release: str, socket: Path, pidfile: Path, log: Path,
                 protocol: str, identity: ProcessIdentity, pidfd: int,
                 record: InstanceRecord, popen: subprocess.Popen[bytes] | None = None,
                 state: ServerState = ServerState.STARTING) -> None:
        self.instance, self.release = instance, release
        self.socket, self.pidfile, self.log, self.protocol = socket, pidfile, log, protocol
        self.identity, self.pidfd, self.popen = identity, pidfd, popen
        self.record = record  # run/<instance>.pid as written: how its processes are found
        self.state = state
        # Wall and monotonic start times; an adopted server's come from its real start.
        age = max(0.0, time.time() - identity.create_time) if identity.create_time else 0.0
        self.started = time.time() - age
        self.started_mono = time.monotonic() - age
        self.returncode: int | None = None
        self.exited: asyncio.Event = asyncio.Event()
        self.expected_exit = False  # set before we stop it: an exit then is no crash
        self._closed = False
        asyncio.get_running_loop().add_reader(pidfd, self._on_pidfd_readable)

    @property
    def pid(self) -> int:
        return self.identity.pid

    @property
    def alive(self) -> bool:
        return not self.exited.is_set()

    def advance(self, to: ServerState) -> None:
        """The one path for a state change."""
        check_transition(self.state, to)
        if to != self.state:
            log.info("server.state_changed", instance=self.instance, old=str(self.state),
                     new=str(to))
        self.state = to

    def _on_pidfd_readable(self) -> None:
        # A pidfd becomes readable once when the process exits (Linux >= 5.3): no polling.
        if self.popen is not None:
            self.returncode = self.popen.poll()  # reaps our own child
        self.close()
        self.exited.set()

    async def wait_exited(self, timeout: float | None = None) -> bool:
        """True if the process exited within *timeout*."""
        try:
            async with asyncio.timeout(timeout):
                await self.exited.wait()
        except TimeoutError:
            return False
        return True

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        asyncio.get_running_loop().remove_reader(self.pidfd)
        with contextlib.suppress(OSError):
            os.close(self.pidfd)

    def describe(self, figures: Figures | None, *, live: bool) -> ServerLine:
        """This instance as `relman status` lists it."""
        return ServerLine(instance=self.instance, release=self.release, pid=self.pid,
                          state=str(self.state), socket=str(self.socket), started=self.started,
                          live=live, figures=figures)

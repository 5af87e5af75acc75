"""ServerSpec and ServerHandle: one instance of a release's web server or of one of its
process units ([processes.NAME]), started by us or adopted after a restart."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from relman.results import Figures, ServerLine
from relman.supervisor.identity import WEB, InstanceRecord, ProcessIdentity, check_unit
from relman.supervisor.states import ServerState, check_transition

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerSpec:
    """Everything needed to start one instance of a release's web server or process."""

    # <release>.<generation> (web: never two generations on one socket path), or
    # <release>.<process>.<index>.<generation> (Supervisor.next_instance)
    instance: str
    release: str
    argv: tuple[str, ...]
    cwd: Path
    env: Mapping[str, str] = field(repr=False)  # never logged: it may hold secrets
    socket: Path | None  # the web server's; None for a process unit, which has none
    pidfile: Path
    log: Path
    process: str = WEB
    index: int = 1
    stop_signal: int = signal.SIGTERM
    protocol: str = "http"
    socket_mode: int = 0o660
    socket_group: str = ""

    def __post_init__(self) -> None:
        check_unit(self.release, self.process, self.index, self.instance)
        if (self.socket is None) == (self.process == WEB):
            raise ValueError(f"{self.instance}: the web server, and only it, has a socket")

    @property
    def listener(self) -> Path:
        """The web server's socket; TypeError for a process unit, which has none."""
        if self.socket is None:
            raise TypeError(f"{self.instance} is a {self.process} process: it has no socket")
        return self.socket


class ServerHandle:
    """A running server: identity, pidfd exit watch and lifecycle state.

    Children and adopted processes are the same type: both are watched through a pidfd, so
    adoption after a daemon restart is not a special code path (STYLE practice 5).
    """

    def __init__(self, *, instance: str, release: str, socket: Path | None, pidfile: Path,
                 log: Path, protocol: str, identity: ProcessIdentity, pidfd: int,
                 record: InstanceRecord, popen: subprocess.Popen[bytes] | None = None,
                 state: ServerState = ServerState.STARTING) -> None:
        self.instance, self.release = instance, release
        # What it is and how it stops are the record's: the same for an adopted one.
        self.process, self.index, self.stop_signal = (record.process, record.index,
                                                      record.stop_signal)
        self.socket, self.pidfile, self.log, self.protocol = socket, pidfile, log, protocol
        self.identity, self.pidfd, self.popen = identity, pidfd, popen
        self.record = record  # run/<instance>.pid as written: how its processes are found
        self.state = state
        # Wall and monotonic start times: now for our own child, just spawned; an adopted
        # one's from its real start (psutil's create_time, which can be a second off: it
        # counts from /proc/stat's boot time, in whole seconds).
        age = max(0.0, time.time() - identity.create_time) \
            if identity.create_time and popen is None else 0.0
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
    def is_web(self) -> bool:
        return self.process == WEB

    @property
    def listener(self) -> Path:
        """The web server's socket; TypeError for a process unit, which has none."""
        if self.socket is None:
            raise TypeError(f"{self.instance} is a {self.process} process: it has no socket")
        return self.socket

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
                          state=str(self.state),
                          socket="" if self.socket is None else str(self.socket),
                          started=self.started, live=live, figures=figures,
                          process=self.process, index=self.index)

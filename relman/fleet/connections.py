"""One ssh master connection per host for a whole fleet run ([fleet] multiplex): a run
makes three to a dozen short sessions per host (status, build, prepare, switch, canary
looks), and each would otherwise pay for a connection and an authentication of its own.

OpenSSH's ControlMaster does it: the first session to a host opens the master, the others
go through its socket. The sockets live in a private directory of the run's (0700), one
per [fleet] hosts entry, so two entries that are one address, port and user with other
keys (ssh config aliases) never share one. close() ends the masters; one left by a killed
coordinator ends itself after ssh.CONTROL_PERSIST idle seconds, and the next run removes
its empty directory."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import stat
import tempfile
import time
from pathlib import Path
from typing import Final

from relman.config_fleet import FleetConfig, parse_host
from relman.fleet.ssh import CONTROL_PERSIST, ssh_options

__all__ = ["Connections"]

# A unix socket path has 107 bytes, and ssh adds a 17-byte suffix while it makes one.
_LONGEST_DIR: Final = 64
PREFIX: Final = "relman-ssh-"


def remove_stale_dirs(base: Path, now: float | None = None) -> None:
    """The socket directories killed coordinators left in *base*: this user's, empty (their
    masters have ended) and older than twice CONTROL_PERSIST. rmdir never takes a
    directory that holds anything."""
    limit = (time.time() if now is None else now) - 2 * CONTROL_PERSIST
    for path in base.glob(PREFIX + "*"):
        with contextlib.suppress(OSError):
            info = path.lstat()
            if stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid() \
                    and info.st_mtime < limit:
                path.rmdir()


class Connections:
    def __init__(self, fleet: FleetConfig) -> None:
        self.fleet = fleet
        self.dir: Path | None = None
        if fleet.multiplex:
            base = tempfile.gettempdir()
            base = base if len(base) < _LONGEST_DIR else "/tmp"
            remove_stale_dirs(Path(base))
            self.dir = Path(tempfile.mkdtemp(prefix=PREFIX, dir=base))
        self.paths = ({h: self.dir / f"h{i}" for i, h in enumerate(fleet.hosts)}
                      if self.dir is not None else {})

    def path(self, host: str) -> Path | None:
        """The ControlPath of *host*'s master; None without multiplexing."""
        return self.paths.get(host)

    async def close(self) -> None:
        """`ssh -O exit` to every master that was opened, then the directory goes."""
        async def end(host: str, path: Path) -> None:
            argv = [*self.fleet.ssh, *ssh_options(host, path), "-O", "exit", "--",
                    parse_host(host).destination]
            with contextlib.suppress(OSError, TimeoutError):
                proc = await asyncio.create_subprocess_exec(
                    *argv, stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
                    start_new_session=True)
                await asyncio.wait_for(proc.wait(), 10)

        await asyncio.gather(*(end(h, p) for h, p in self.paths.items() if p.exists()))
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)

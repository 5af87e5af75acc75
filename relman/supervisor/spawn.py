"""start_server(): a release's app server in its own session, with a pidfile of its identity."""

from __future__ import annotations

import contextlib
import grp
import os
import subprocess
from pathlib import Path

import psutil
import structlog

from relman.errors import Unhealthy, UsageError
from relman.supervisor.identity import (
    ProcessIdentity,
    pidfd_for,
    read_pidfile,
    take_identity,
    write_pidfile,
)
from relman.supervisor.kinds import socket_umask
from relman.supervisor.server import ServerHandle, ServerSpec
from relman.supervisor.states import ServerState

log = structlog.get_logger(__name__)


# The server writes to its log through a descriptor relman cannot reopen, so the log is
# rotated when a server starts (every deploy, rollback and restart), not while it runs;
# for long-lived servers, logrotate with copytruncate does the rest.
ROTATE_BYTES = 50 * 2**20
ROTATE_KEEP = 3


def rotate_log(path: Path, *, limit: int = ROTATE_BYTES, keep: int = ROTATE_KEEP) -> bool:
    """Shift path -> path.1 -> ... -> path.<keep> when *path* is larger than *limit*."""
    try:
        if path.stat().st_size <= limit:
            return False
    except FileNotFoundError:
        return False
    for n in range(keep - 1, 0, -1):
        older = path.with_name(f"{path.name}.{n}")
        if older.exists():
            older.replace(path.with_name(f"{path.name}.{n + 1}"))
    path.replace(path.with_name(f"{path.name}.1"))
    return True


def start_server(spec: ServerSpec) -> ServerHandle:
    """Spawn the server of *spec* in a new session (its own process group).

    App servers are not children of any task: they must keep serving through a SIGKILL of
    the daemon (DESIGN section 6), and are found again through their pidfiles.
    """
    with contextlib.suppress(FileNotFoundError):
        spec.socket.unlink()  # a leftover of a crashed instance would fail the bind
    rotate_log(spec.log)
    with spec.log.open("ab") as out:
        out.write(f"--- relman: starting {spec.instance}: {' '.join(spec.argv)}\n".encode())
        out.flush()
        try:
            popen = subprocess.Popen(
                spec.argv, cwd=spec.cwd, env=dict(spec.env), stdin=subprocess.DEVNULL,
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True, close_fds=True,
                umask=socket_umask(spec.socket_mode),  # no 0777 socket before secure_socket()
            )
        except OSError as e:
            raise Unhealthy(f"cannot start {spec.argv[0]}: {e.strerror}") from None
    pidfd = os.pidfd_open(popen.pid)
    try:
        identity = take_identity(popen.pid)
    except psutil.Error:  # it died before we could look: the pidfd still reports the exit
        identity = ProcessIdentity(popen.pid, 0.0, tuple(spec.argv), str(spec.cwd))
    write_pidfile(spec.pidfile, identity, _pidfile_extra(spec))
    log.info("server.started", instance=spec.instance, pid=popen.pid, socket=str(spec.socket))
    return ServerHandle(instance=spec.instance, release=spec.release, socket=spec.socket,
                        pidfile=spec.pidfile, log=spec.log, protocol=spec.protocol,
                        identity=identity, pidfd=pidfd, popen=popen)


def _pidfile_extra(spec: ServerSpec) -> dict[str, object]:
    return {"instance": spec.instance, "release": spec.release, "socket": str(spec.socket),
            "log": str(spec.log), "protocol": spec.protocol}


def secure_socket(spec: ServerSpec) -> None:
    """Give the server's socket server.socket_mode and server.socket_group (never 0777).

    Done by relman rather than by each server's umask option, so that every kind behaves
    the same; nothing points at the socket before this runs.
    """
    group = spec.socket_group
    if group:
        try:
            os.chown(spec.socket, -1, grp.getgrnam(group).gr_gid)
        except KeyError:
            raise UsageError(f"server.socket_group: no group named {group!r} on this host")\
                from None
        except PermissionError:
            raise UsageError(
                f"server.socket_group: cannot give the socket to group {group!r}",
                hint=f"the deploy user must be a member: usermod -aG {group} USER") from None
    os.chmod(spec.socket, spec.socket_mode)


def adopt_server(pidfile: Path, state: ServerState) -> ServerHandle | None:
    """A handle on the server a pidfile records, if that very process still runs."""
    found = read_pidfile(pidfile)
    if found is None:
        return None
    identity, extra = found
    pidfd = pidfd_for(identity)
    if pidfd is None:
        log.info("server.stale_pidfile", pidfile=str(pidfile), pid=identity.pid)
        return None
    handle = ServerHandle(instance=str(extra["instance"]), release=str(extra["release"]),
                          socket=Path(str(extra["socket"])), pidfile=pidfile,
                          log=Path(str(extra["log"])), protocol=str(extra.get("protocol", "http")),
                          identity=identity, pidfd=pidfd, state=state)
    log.info("server.adopted", instance=handle.instance, pid=identity.pid)
    return handle

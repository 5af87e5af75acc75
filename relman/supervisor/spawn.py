"""start_server(): a release's web server or process instance in its own session, with a
record of its identity."""

from __future__ import annotations

import contextlib
import grp
import os
import signal
import subprocess
import time
from pathlib import Path

import psutil
import structlog

from relman.errors import Unhealthy, UsageError
from relman.supervisor.identity import (
    WEB,
    InstanceRecord,
    ProcessIdentity,
    take_identity,
    write_record,
)
from relman.supervisor.kinds import socket_umask
from relman.supervisor.server import ServerHandle, ServerSpec
from relman.supervisor.states import ServerState
from relman.supervisor.tracking import Tracker

log = structlog.get_logger(__name__)

# Tests only (the transaction's RELMAN_TEST_CRASH_AT): "spawned" kills the daemon between
# the spawn and the record of the pid.
CRASH_ENV = "RELMAN_TEST_CRASH_AT"


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


def start_server(spec: ServerSpec, tracker: Tracker) -> ServerHandle:
    """Spawn the web server or process of *spec* in a new session (its own process group),
    recorded in run/<instance>.pid before it starts and tracked by its cgroup or its tags.

    App servers are not children of any task: they must keep serving through a SIGKILL of
    the daemon (DESIGN section 6), and are found again through their records.
    """
    if spec.socket is not None:
        with contextlib.suppress(FileNotFoundError):
            spec.socket.unlink()  # a leftover of a crashed instance would fail the bind
    rotate_log(spec.log)
    record = InstanceRecord(instance=spec.instance, release=spec.release,
                            protocol=spec.protocol, cwd=str(spec.cwd),
                            cgroup=tracker.prepare(spec.instance), spawned=time.time(),
                            process=spec.process, index=spec.index,
                            stop_signal=int(spec.stop_signal))
    write_record(spec.pidfile, record)  # first: a daemon killed after the spawn finds it
    popen = _spawn(spec, tracker, record)
    if os.environ.get(CRASH_ENV) == "spawned":  # tests only: die before the pid is recorded
        os.kill(os.getpid(), signal.SIGKILL)
    pidfd = os.pidfd_open(popen.pid)
    try:
        identity = take_identity(popen.pid)
    except psutil.Error:  # it died before we could look: the pidfd still reports the exit
        identity = ProcessIdentity(popen.pid, 0.0, os.getuid(), str(spec.cwd))
    record = record.with_identity(identity)
    try:
        write_record(spec.pidfile, record)
    except BaseException:
        # A job that fails stops what it started: our own unreaped child and its group
        # (the wrapper may not be in its cgroup yet), then whatever reached the cgroup.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(popen.pid, signal.SIGKILL)
        if record.cgroup:
            tracker.kill_all(record)
        popen.wait()
        os.close(pidfd)
        raise
    log.info("server.started", instance=spec.instance, process=spec.process,
             index=spec.index, pid=popen.pid,
             socket="" if spec.socket is None else str(spec.socket), tracking=tracker.mode)
    return ServerHandle(instance=spec.instance, release=spec.release, socket=spec.socket,
                        pidfile=spec.pidfile, log=spec.log, protocol=spec.protocol,
                        identity=identity, pidfd=pidfd, record=record, popen=popen)


def _spawn(spec: ServerSpec, tracker: Tracker,
           record: InstanceRecord) -> subprocess.Popen[bytes]:
    """Popen of *spec*'s argv, its output appended to its log after a line naming it."""
    what = spec.instance if spec.process == WEB else \
        f"{spec.process} {spec.index} ({spec.instance})"
    # A web server starts with a umask that keeps its socket from being 0777 before
    # secure_socket(); a process has no socket and keeps the daemon's.
    umask = -1 if spec.socket is None else socket_umask(spec.socket_mode)
    with spec.log.open("ab") as out:
        out.write(f"--- relman: starting {what}: {' '.join(spec.argv)}\n".encode())
        out.flush()
        try:
            return subprocess.Popen(
                tracker.wrap(spec.argv, record), cwd=spec.cwd,
                env={**spec.env, **tracker.tags(spec.instance)}, stdin=subprocess.DEVNULL,
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True, close_fds=True,
                umask=umask,
            )
        except OSError as e:
            spec.pidfile.unlink(missing_ok=True)
            raise Unhealthy(f"cannot start {spec.argv[0]}: {e.strerror}") from None


def secure_socket(spec: ServerSpec) -> None:
    """Give the server's socket server.socket_mode and server.socket_group (never 0777).

    Done by relman rather than by each server's umask option, so that every kind behaves
    the same; nothing points at the socket before this runs.
    """
    if spec.socket is None:
        return
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
                hint=f"the daemon (pid {os.getpid()}) must run with that group: usermod "
                     f"-aG {group} USER, then restart the daemon (a running process keeps "
                     "the groups it started with)") from None
    os.chmod(spec.socket, spec.socket_mode)


def adopt_server(record: InstanceRecord, leader: ProcessIdentity, pidfd: int, *,
                 run_dir: Path, log_dir: Path) -> ServerHandle:
    """A handle on *record*'s instance, whose *leader* was found running. Its socket and log
    paths are derived from the record's names, never read from the file: a web server's
    run/<instance>.sock and log/<release>.log, a process's log/<release>.<process>.log and
    no socket."""
    if record.is_web:
        socket: Path | None = run_dir / f"{record.instance}.sock"
        log_path = log_dir / f"{record.release}.log"
    else:
        socket, log_path = None, log_dir / f"{record.release}.{record.process}.log"
    handle = ServerHandle(instance=record.instance, release=record.release, socket=socket,
                          pidfile=run_dir / f"{record.instance}.pid", log=log_path,
                          protocol=record.protocol, identity=leader, pidfd=pidfd,
                          record=record.with_identity(leader), state=ServerState.HEALTHY)
    log.info("server.adopted", instance=handle.instance, process=handle.process,
             index=handle.index, pid=leader.pid)
    return handle

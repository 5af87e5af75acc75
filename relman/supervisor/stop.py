"""stop_server(): graceful SIGTERM, then SIGKILL of the process group after stop_timeout."""

from __future__ import annotations

import contextlib
import os
import signal

import psutil
import structlog

from relman.supervisor.server import ServerHandle
from relman.supervisor.states import ServerState

log = structlog.get_logger(__name__)


def _signal(handle: ServerHandle, sig: int) -> bool:
    """Send *sig* through the pidfd taken after the identity check; False if gone."""
    if not handle.alive:
        return False
    try:
        signal.pidfd_send_signal(handle.pidfd, sig)
    except (ProcessLookupError, OSError):
        return False
    return True


def _kill_stragglers(handle: ServerHandle) -> int:
    """SIGKILL what is left of the group after its leader exited: workers it orphaned.

    Only processes whose process group is the leader's pid and that started after it: a pid
    number alone is never enough to signal.
    """
    killed = 0
    for proc in psutil.process_iter(["pid", "create_time"]):
        try:
            if os.getpgid(proc.pid) != handle.pid:
                continue
            if proc.info["create_time"] + 0.05 < handle.identity.create_time:
                continue
            os.kill(proc.pid, signal.SIGKILL)
            killed += 1
        except (ProcessLookupError, PermissionError):
            continue
    return killed


async def stop_server(handle: ServerHandle, timeout: float) -> bool:
    """Stop *handle* gracefully; True if it exited before the deadline without SIGKILL.

    gunicorn stops gracefully on SIGTERM; uWSGI does with the hook kinds.py adds.
    """
    handle.expected_exit = True
    if handle.state not in (ServerState.STOPPING, ServerState.STOPPED):
        handle.advance(ServerState.STOPPING)
    graceful = True
    if _signal(handle, signal.SIGTERM) and not await handle.wait_exited(timeout):
        graceful = False
        log.info("server.kill_escalated", instance=handle.instance, pid=handle.pid,
                 after=timeout)
        with contextlib.suppress(ProcessLookupError):
            # The leader is alive and verified (its pidfd is open), so its group is ours.
            os.killpg(handle.pid, signal.SIGKILL)
        await handle.wait_exited(5)
    stragglers = _kill_stragglers(handle)
    handle.advance(ServerState.STOPPED)
    handle.pidfile.unlink(missing_ok=True)
    with contextlib.suppress(FileNotFoundError):
        handle.socket.unlink()
    log.info("server.stopped", instance=handle.instance, pid=handle.pid, graceful=graceful,
             returncode=handle.returncode, stragglers=stragglers)
    return graceful

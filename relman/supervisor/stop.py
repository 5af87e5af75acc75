"""stop_server(): the instance's graceful stop signal (SIGTERM for the web server, a process's
stop_signal), then SIGKILL of its process group and of every process of the instance (its
cgroup, or its tags) after the timeout; then whatever is left of the instance (orphaned
workers, double-forked helpers) is killed."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time

import structlog

from relman.supervisor.identity import InstanceRecord
from relman.supervisor.server import ServerHandle
from relman.supervisor.states import ServerState
from relman.supervisor.tracking import Tracker

log = structlog.get_logger(__name__)

# How long the rest of an instance may take to leave once SIGKILLed; the kernel needs
# milliseconds, a process in uninterruptible sleep (NFS) longer.
REMNANT_WAIT = 10.0


def _signal(handle: ServerHandle, sig: int) -> bool:
    """Send *sig* through the pidfd taken after the identity check; False if gone."""
    if not handle.alive:
        return False
    try:
        signal.pidfd_send_signal(handle.pidfd, sig)
    except (ProcessLookupError, OSError):
        return False
    return True


async def end_remnants(tracker: Tracker, record: InstanceRecord) -> int:
    """SIGKILL every process left of *record*'s instance and wait (bounded) until none is
    left; its cgroup is removed. How many were killed."""
    killed = await asyncio.to_thread(tracker.kill_all, record)
    deadline = time.monotonic() + REMNANT_WAIT
    while not await asyncio.to_thread(tracker.empty, record):
        if time.monotonic() > deadline:
            log.warning("server.remnants_left", instance=record.instance)
            break
        await asyncio.sleep(0.02)
        await asyncio.to_thread(tracker.kill_all, record)
    return killed


async def stop_server(handle: ServerHandle, timeout: float, tracker: Tracker) -> bool:
    """Stop *handle* gracefully; True if it exited before the deadline without SIGKILL.

    gunicorn stops gracefully on SIGTERM; uWSGI does with the hook kinds.py adds; a process
    unit on the stop_signal its config names (Celery finishes its current task on TERM).
    """
    handle.expected_exit = True
    if handle.state not in (ServerState.STOPPING, ServerState.STOPPED):
        handle.advance(ServerState.STOPPING)
    graceful = True
    if _signal(handle, handle.stop_signal) and not await handle.wait_exited(timeout):
        graceful = False
        log.info("server.kill_escalated", instance=handle.instance, process=handle.process,
                 pid=handle.pid, signal=signal.Signals(handle.stop_signal).name, after=timeout)
        if handle.alive:
            with contextlib.suppress(ProcessLookupError):
                # The leader is alive and verified (its pidfd is open), so its group is ours.
                os.killpg(handle.pid, signal.SIGKILL)
        await end_remnants(tracker, handle.record)
        await handle.wait_exited(5)
    remnants = await end_remnants(tracker, handle.record)
    handle.advance(ServerState.STOPPED)
    handle.pidfile.unlink(missing_ok=True)
    if handle.socket is not None:
        with contextlib.suppress(FileNotFoundError):
            handle.socket.unlink()
    log.info("server.stopped", instance=handle.instance, process=handle.process,
             pid=handle.pid, graceful=graceful, returncode=handle.returncode,
             remnants=remnants)
    return graceful

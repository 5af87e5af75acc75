"""Adoption after a daemon restart: the instances the previous daemon recorded are taken
over where their leader still runs and ended where it does not, and any process of the app
that no record names is stopped (TERM, then KILL): nothing it started is ever lost."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import structlog

from relman.atomic import set_aside
from relman.supervisor.identity import (
    CorruptRecord,
    InstanceRecord,
    pidfd_for,
    read_record,
    write_record,
)
from relman.supervisor.server import ServerHandle
from relman.supervisor.spawn import adopt_server
from relman.supervisor.stop import end_remnants
from relman.supervisor.tracking import Tracker

log = structlog.get_logger(__name__)


@dataclass(slots=True)
class Adoption:
    """What adopt_instances() found: the handles, and notes for the history."""

    handles: list[ServerHandle] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


async def adopt_instances(run_dir: Path, log_dir: Path, tracker: Tracker,
                          stray_timeout: float) -> Adoption:
    """Adopt every recorded instance whose leader runs; end the others' remnants and every
    unrecorded process of the app."""
    found = Adoption()
    recorded: set[str] = set()
    for pidfile in sorted(run_dir.glob("*.pid")):
        try:
            record = read_record(pidfile)
        except CorruptRecord as e:
            aside = set_aside(pidfile, reason=str(e))
            found.notes.append(f"unreadable {pidfile.name} set aside as {aside.name}")
            continue
        if record is None:
            continue
        recorded.add(record.instance)
        try:
            handle = await _adopt_one(record, pidfile, run_dir, log_dir, tracker)
        except (ValueError, OSError, psutil.Error) as e:  # a record no check foresaw
            aside = set_aside(pidfile, reason=str(e))
            found.notes.append(f"{pidfile.name} could not be used ({e}): set aside as "
                               f"{aside.name}")
            continue
        if handle is not None:
            found.handles.append(handle)
            continue
        killed = await end_remnants(tracker, record)
        pidfile.unlink(missing_ok=True)
        if record.is_web:
            (run_dir / f"{record.instance}.sock").unlink(missing_ok=True)
        if killed:
            log.warning("server.remnants_killed", instance=record.instance, killed=killed)
            found.notes.append(f"{record.instance}: its server was gone; killed {killed} "
                               "process(es) it left")
    await _stop_strays(tracker, recorded, stray_timeout, found)
    return found


async def _adopt_one(record: InstanceRecord, pidfile: Path, run_dir: Path, log_dir: Path,
                     tracker: Tracker) -> ServerHandle | None:
    leader = await asyncio.to_thread(tracker.leader, record)
    if leader is None:
        return None
    pidfd = pidfd_for(leader.pid)
    # Checked again with the pidfd open: the pid cannot be reused behind our back now.
    if pidfd is None or await asyncio.to_thread(tracker.leader, record) != leader:
        _close(pidfd)
        return None
    handle = adopt_server(record, leader, pidfd, run_dir=run_dir, log_dir=log_dir)
    if record.pid != leader.pid:  # the previous daemon died before writing the pid
        write_record(pidfile, handle.record)
    return handle


async def _stop_strays(tracker: Tracker, recorded: set[str], timeout: float,
                       found: Adoption) -> None:
    strays = await asyncio.to_thread(tracker.strays, recorded)
    if not strays:
        return
    for instance, pids in strays.items():
        log.warning("process.unrecorded", instance=instance, pids=pids)
        found.notes.append(f"stopping {len(pids)} unrecorded process(es) of {instance} "
                           f"(pids {', '.join(map(str, pids)) or 'none left'})")
        await asyncio.to_thread(tracker.end_stray, instance, pids, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while strays and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        strays = await asyncio.to_thread(tracker.strays, recorded)
        for instance in [i for i, pids in strays.items() if not pids]:
            await asyncio.to_thread(tracker.end_stray, instance, [], signal.SIGKILL)
            del strays[instance]
    for instance, pids in strays.items():
        log.warning("process.unrecorded_killed", instance=instance, pids=pids)
        await asyncio.to_thread(tracker.end_stray, instance, pids, signal.SIGKILL)


def _close(fd: int | None) -> None:
    if fd is not None:
        os.close(fd)

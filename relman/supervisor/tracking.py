"""Tracker: which processes belong to which of an app's server instances, by cgroup where the
daemon may create them, else by the RELMAN_* tags every instance's processes carry.

The scans of the tag mode read /proc: callers in the event loop run them in a thread.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import psutil
import structlog

from relman.supervisor.cgroups import CgroupTree
from relman.supervisor.identity import (
    CREATE_TIME_SLACK,
    TAG_APP,
    TAG_ROOT,
    TAG_UNIT,
    InstanceRecord,
    ProcessIdentity,
    is_tagged,
    live_process,
    tags_of,
    unit_of,
)

log = structlog.get_logger(__name__)


class Tracker:
    """How one app's instance processes are found, started into place and ended."""

    def __init__(self, app: str, root: Path, cgroups: CgroupTree | None) -> None:
        self.app, self.root, self.cgroups = app, str(root), cgroups
        self.uid = os.getuid()

    @classmethod
    def for_app(cls, app: str, root: Path) -> Tracker:
        tracker = cls(app, root, CgroupTree.find(app, root))
        log.info("tracking.chosen", mode=tracker.mode,
                 cgroup=str(tracker.cgroups.base) if tracker.cgroups else "")
        return tracker

    @property
    def mode(self) -> str:
        return "cgroup" if self.cgroups is not None else "tags"

    def tags(self, instance: str) -> dict[str, str]:
        """The tags every process of *instance* carries (RELMAN_INSTANCE is the index the
        transaction sets, not a tag)."""
        return {TAG_APP: self.app, TAG_ROOT: self.root, TAG_UNIT: instance}

    def prepare(self, instance: str) -> str:
        """Create *instance*'s cgroup, if cgroups are used; its path, or ""."""
        if self.cgroups is None:
            return ""
        return str(self.cgroups.create(instance))

    def wrap(self, argv: Sequence[str], record: InstanceRecord) -> list[str]:
        """*argv*, started so that it is in its cgroup before it runs a single instruction
        of its own: /bin/sh moves itself into it (writing 0 to cgroup.procs) and execs, so
        the server keeps the pid Popen returned and everything it forks is in there too."""
        if not record.cgroup:
            return list(argv)
        procs = str(Path(record.cgroup) / "cgroup.procs")
        return ["/bin/sh", "-c", 'echo 0 > "$0" && exec "$@"', procs, *argv]

    def _own(self, record: InstanceRecord) -> bool:
        return bool(record.cgroup) and self.cgroups is not None \
            and self.cgroups.owns(Path(record.cgroup))

    def leader(self, record: InstanceRecord) -> ProcessIdentity | None:
        """The instance's leader, if the record's pid is still it (blocking in tag mode)."""
        identity = record.identity
        if identity is None:
            return self._unrecorded_leader(record)
        if identity.uid not in (self.uid, -1):
            return None  # servers run as the daemon's user: never another user's process
        proc = live_process(identity)
        if proc is None:
            return None
        if identity.uid == -1:  # a pidfile of relman before instance records: no tags
            return identity if _legacy_match(proc, record, self.uid) else None
        if self._own(record):
            assert self.cgroups is not None
            return identity if identity.pid in self.cgroups.procs(record.instance) else None
        # No cgroup, or one not in this daemon's tree (cgroups since switched off, the unit
        # renamed): the tags, which every instance carries in both modes, decide.
        return identity if is_tagged(proc, self.root, record.instance, record.cwd) else None

    def _unrecorded_leader(self, record: InstanceRecord) -> ProcessIdentity | None:
        """The leader of an instance the daemon died before recording the pid of: the
        session leader among its members (Popen's start_new_session made it one)."""
        for proc in self.members(record):
            with contextlib.suppress(psutil.Error, OSError):
                if os.getsid(proc.pid) == proc.pid:
                    return ProcessIdentity(proc.pid, proc.create_time(), proc.uids().real,
                                           proc.cwd())
        return None

    def members(self, record: InstanceRecord) -> list[psutil.Process]:
        """Every process of the instance now (blocking in tag mode)."""
        if self._own(record):
            assert self.cgroups is not None
            found = []
            for pid in self.cgroups.procs(record.instance):
                with contextlib.suppress(psutil.Error):
                    found.append(psutil.Process(pid))
            return found
        return [p for p in self._ours() if self._tag_member(p, record)]

    def _ours(self) -> Iterator[psutil.Process]:
        """Processes of the daemon's user, the daemon excluded."""
        me = os.getpid()
        for proc in psutil.process_iter():
            with contextlib.suppress(psutil.Error):
                if proc.pid != me and proc.uids().real == self.uid:
                    yield proc

    def _tag_member(self, proc: psutil.Process, record: InstanceRecord) -> bool:
        """Tagged with the instance; or, environment overwritten (setproctitle), in the
        leader's session and release directory and started after it."""
        if record.uid == -1 and record.pid:  # a pidfile of relman before tags: its group
            return _in_group_of(proc, record)
        tags = tags_of(proc)
        if tags is not None:
            return tags.get(TAG_ROOT) == self.root and unit_of(tags) == record.instance
        try:
            if proc.cwd() != record.cwd or not record.cwd:
                return False
            since = record.create_time if record.pid else record.spawned - 1.0
            if proc.create_time() + CREATE_TIME_SLACK < since:
                return False
            sid = os.getsid(proc.pid)
        except (psutil.Error, OSError):
            return False
        return sid == record.pid if record.pid else sid == proc.pid

    def kill_all(self, record: InstanceRecord) -> int:
        """SIGKILL every process of the instance (blocking in tag mode); how many."""
        if self._own(record):
            assert self.cgroups is not None
            count = len(self.cgroups.procs(record.instance))
            self.cgroups.kill(record.instance)
            return count
        return sum(signal_pinned(proc, signal.SIGKILL,
                                 lambda p: self._tag_member(p, record))
                   for proc in self.members(record))

    def empty(self, record: InstanceRecord) -> bool:
        """True when nothing of the instance runs; its cgroup is then removed."""
        if self._own(record):
            assert self.cgroups is not None
            return self.cgroups.remove(record.instance)
        return not self.members(record)

    def strays(self, recorded: set[str]) -> dict[str, list[int]]:
        """Processes of this app in no recorded instance: instance -> pids (blocking)."""
        found: dict[str, list[int]] = {}
        if self.cgroups is not None:
            for instance in self.cgroups.instances():
                if instance not in recorded:
                    found[instance] = self.cgroups.procs(instance)
        for proc in self._ours():
            tags = tags_of(proc) or {}
            instance = unit_of(tags)
            if tags.get(TAG_ROOT) == self.root and instance and instance not in recorded:
                found.setdefault(instance, [])
                if proc.pid not in found[instance]:
                    found[instance].append(proc.pid)
        return found

    def end_stray(self, instance: str, pids: list[int], sig: int) -> None:
        """Send *sig* to a stray instance's *pids* (re-checked: still tagged so, or in its
        cgroup); SIGKILL also uses cgroup.kill, and an empty stray cgroup is removed."""
        in_cgroup = set(self.cgroups.procs(instance)) if self.cgroups is not None and \
            instance in self.cgroups.instances() else set()
        def still_stray(proc: psutil.Process) -> bool:
            tags = tags_of(proc) or {}
            return proc.pid in in_cgroup or (tags.get(TAG_ROOT) == self.root
                                             and unit_of(tags) == instance)

        for pid in pids:
            with contextlib.suppress(psutil.Error):
                signal_pinned(psutil.Process(pid), sig, still_stray)
        if self.cgroups is not None and instance in self.cgroups.instances():
            if sig == signal.SIGKILL:
                self.cgroups.kill(instance)
            self.cgroups.remove(instance)


def _legacy_match(proc: psutil.Process, record: InstanceRecord, uid: int) -> bool:
    """An old pidfile (pid, start time, argv, cwd) names *proc*: it runs as the daemon's
    user in the recorded release directory (argv is not compared: setproctitle)."""
    try:
        return proc.uids().real == uid and bool(record.cwd) and proc.cwd() == record.cwd
    except (psutil.Error, OSError):
        return False


def _in_group_of(proc: psutil.Process, record: InstanceRecord) -> bool:
    """*proc* is in the process group of an old pidfile's leader and started after it."""
    try:
        return (os.getpgid(proc.pid) == record.pid
                and proc.create_time() + CREATE_TIME_SLACK >= record.create_time)
    except (psutil.Error, OSError):
        return False


def signal_pinned(proc: psutil.Process, sig: int,
                  check: Callable[[psutil.Process], bool]) -> bool:
    """Send *sig* to *proc* through a pidfd opened first and only if, with the pid pinned
    by it, *proc* is still the process that was found (same start time) and *check* still
    holds: a pid freed and reused meanwhile is never signalled. True if sent."""
    try:
        fd = os.pidfd_open(proc.pid)
    except (ProcessLookupError, OSError):
        return False
    try:
        if not proc.is_running() or not check(proc):
            return False
        signal.pidfd_send_signal(fd, sig)
    except (psutil.Error, ProcessLookupError, PermissionError):
        return False
    finally:
        os.close(fd)
    return True

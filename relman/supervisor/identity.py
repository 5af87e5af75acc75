"""Instance records and process identity: what the daemon started, written down before it
starts it, and the test that tells one of its processes from any other.

A record (run/<instance>.pid, JSON) is written before the spawn and completed with the
leader's pid and start time after it, so a daemon killed in between still finds the
instance. It is a record, never proof: a process is an instance's only when
- its cgroup is the instance's (where cgroups are used; see cgroups.py), or
- it runs as the daemon's user, started when the record says, and carries the instance's
  RELMAN_* tags in its environment, RELMAN_UNIT naming the instance (or, once setproctitle
  has overwritten the environment as gunicorn does with it installed, runs in the
  instance's release directory).

A process's argv is not identity: gunicorn with setproctitle renames itself.

An instance is of the web server (`<release>.<generation>`) or of a process unit, instance
*index* of [processes.NAME] (`<release>.<name>.<index>.<generation>`); records written
before process units existed have neither field and are the web server's.
"""

from __future__ import annotations

import json
import os
import re
import signal
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Final

import psutil

from relman.atomic import write_json_atomic

# psutil's create_time has the resolution of the kernel's boot-relative jiffies (10 ms);
# allow a little float noise on top.
CREATE_TIME_SLACK: Final = 0.05
TAG_APP: Final = "RELMAN_APP"
TAG_ROOT: Final = "RELMAN_ROOT"
TAG_UNIT: Final = "RELMAN_UNIT"  # the instance name
# Before RELMAN_UNIT, this tag held the instance name; now it holds a process's index
# (1..count), set by the transaction. A process with no RELMAN_UNIT whose RELMAN_INSTANCE
# is an instance name was started by an older daemon, and is still recognised.
TAG_INSTANCE: Final = "RELMAN_INSTANCE"
WEB: Final = "web"
STOP_SIGNALS: Final = frozenset(int(signal.Signals["SIG" + name]) for name in
                                ("TERM", "INT", "QUIT", "HUP", "USR1", "USR2"))
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\Z")
PROCESS_NAME: Final = re.compile(r"[a-z][a-z0-9_-]*\Z")
_GENERATION = re.compile(r"[1-9][0-9]*\Z")


class CorruptRecord(ValueError):
    """A record that cannot be parsed or names what it may not (a path outside run/)."""


@dataclass(frozen=True, slots=True)
class ProcessIdentity:
    pid: int
    create_time: float
    uid: int = -1
    cwd: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class InstanceRecord:
    """run/<instance>.pid: one server instance, recorded before it is spawned."""

    instance: str
    release: str
    protocol: str = "http"
    cwd: str = ""  # the release directory it runs in
    cgroup: str = ""  # its cgroup directory; "" when tracked by environment tags
    spawned: float = 0.0  # wall-clock time just before the spawn
    pid: int = 0  # 0 until the spawn returned
    create_time: float = 0.0
    uid: int = -1
    process: str = WEB  # "web", or the NAME of [processes.NAME]
    index: int = 1  # which instance of the process (1..count)
    stop_signal: int = signal.SIGTERM.value  # the graceful stop it is sent

    @property
    def is_web(self) -> bool:
        return self.process == WEB

    @property
    def identity(self) -> ProcessIdentity | None:
        if not self.pid:
            return None
        return ProcessIdentity(self.pid, self.create_time, self.uid, self.cwd)

    def with_identity(self, identity: ProcessIdentity) -> InstanceRecord:
        return replace(self, pid=identity.pid, create_time=identity.create_time,
                       uid=identity.uid)


def write_record(path: Path, record: InstanceRecord) -> None:
    write_json_atomic(path, asdict(record), mode=0o644)


def read_record(path: Path) -> InstanceRecord | None:
    """The record in *path*; None if it is gone. CorruptRecord if it cannot be read as one,
    or names another instance than its file name (as a plain pid from `uwsgi --pidfile`)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as e:
        raise CorruptRecord(f"{path}: {e}") from None
    try:
        record = _parse(text)
        _check(record, path)
    except (ValueError, TypeError, RecursionError) as e:
        raise CorruptRecord(f"{path}: {e}") from None
    return record


def _parse(text: str) -> InstanceRecord:
    data: Any = json.loads(text)
    if not isinstance(data, dict):
        raise TypeError("not a JSON object")
    known = set(InstanceRecord.__dataclass_fields__)
    return InstanceRecord(**{k: v for k, v in data.items() if k in known})


def _check(record: InstanceRecord, path: Path) -> None:
    if record.instance != path.name.removesuffix(".pid") or not _NAME.match(record.instance):
        raise ValueError(f"names instance {record.instance!r}")
    for name, kind in (("pid", int), ("create_time", (int, float)), ("uid", int),
                       ("spawned", (int, float)), ("cwd", str), ("cgroup", str),
                       ("protocol", str), ("release", str), ("process", str), ("index", int),
                       ("stop_signal", int)):
        value = getattr(record, name)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise TypeError(f"{name} is not a {kind}")
    if not _NAME.match(record.release) or "." in record.release:
        raise ValueError(f"bad release {record.release!r}")
    check_unit(record.release, record.process, record.index, record.instance)
    if record.stop_signal not in STOP_SIGNALS:
        raise ValueError(f"stop_signal {record.stop_signal} is not a stop signal")
    if record.pid < 0 or record.uid < -1:
        raise ValueError(f"pid {record.pid} or uid {record.uid} cannot be")
    if record.cwd and not record.cwd.startswith("/"):
        raise ValueError(f"cwd {record.cwd!r} is not absolute")


def check_unit(release: str, process: str, index: int, instance: str) -> None:
    """ValueError unless *instance* is the name of a generation of *process*'s instance
    *index* of *release*: `<release>.<gen>` for the web server, else
    `<release>.<process>.<index>.<gen>`."""
    if process != WEB and not PROCESS_NAME.match(process):
        raise ValueError(f"bad process name {process!r}")
    if index < 1 or (process == WEB and index != 1):
        raise ValueError(f"bad index {index} of {process}")
    prefix = f"{release}." if process == WEB else f"{release}.{process}.{index}."
    if not (instance.startswith(prefix) and _GENERATION.match(instance[len(prefix):])):
        raise ValueError(f"{instance!r} is not an instance of {process} {index} of {release}")


def take_identity(pid: int) -> ProcessIdentity:
    """Read the identity of the running process *pid*."""
    proc = psutil.Process(pid)
    with proc.oneshot():
        return ProcessIdentity(pid, proc.create_time(), proc.uids().real, proc.cwd())


def tags_of(proc: psutil.Process) -> dict[str, str] | None:
    """The RELMAN_* tags in *proc*'s environment; None when it cannot be read or holds
    nothing (setproctitle overwrites the memory /proc/PID/environ reads)."""
    try:
        env = proc.environ()
    except (psutil.Error, OSError):
        return None
    if not env:
        return None
    return {k: v for k, v in env.items() if k in (TAG_APP, TAG_ROOT, TAG_UNIT, TAG_INSTANCE)}


def unit_of(tags: dict[str, str]) -> str:
    """The instance name a process's *tags* give: RELMAN_UNIT, or, from a daemon before it,
    a RELMAN_INSTANCE that is an instance name (one with a dot, not an index); else ""."""
    if TAG_UNIT in tags:
        return tags[TAG_UNIT]
    legacy = tags.get(TAG_INSTANCE, "")
    return legacy if "." in legacy else ""


def is_tagged(proc: psutil.Process, root: str, instance: str, cwd: str) -> bool:
    """Whether *proc* carries *instance*'s tags, or, with its environment overwritten,
    runs in *cwd* (the instance's release directory)."""
    tags = tags_of(proc)
    if tags is None:
        try:
            return bool(cwd) and proc.cwd() == cwd
        except (psutil.Error, OSError):
            return False
    return tags.get(TAG_ROOT) == root and unit_of(tags) == instance


def same_start(proc: psutil.Process, create_time: float) -> bool:
    try:
        return abs(proc.create_time() - create_time) <= CREATE_TIME_SLACK
    except psutil.Error:
        return False


def live_process(identity: ProcessIdentity) -> psutil.Process | None:
    """The running, non-zombie process with *identity*'s pid, start time and user."""
    try:
        proc = psutil.Process(identity.pid)
        if not same_start(proc, identity.create_time) or \
                proc.status() == psutil.STATUS_ZOMBIE:
            return None
        if identity.uid >= 0 and proc.uids().real != identity.uid:
            return None
    except (psutil.Error, ValueError, OSError):  # a pid psutil refuses (<= 0), /proc gone
        return None
    return proc


def pidfd_for(pid: int) -> int | None:
    """A pidfd for *pid*, or None if it is gone. Open it, then check identity again: the
    pidfd pins the process, so the target cannot be swapped between check and signal."""
    try:
        return os.pidfd_open(pid)
    except (ProcessLookupError, ValueError, OSError):
        return None

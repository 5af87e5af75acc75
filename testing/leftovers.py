"""Kill what a failed test or bench left running under an app root: only processes its
instance records (run/*.pid) still name, and the whole of their cgroups."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

from relman.supervisor.identity import CorruptRecord, live_process, read_record


def kill_leftover_servers(root: Path) -> None:
    for pidfile in (root / "run").glob("*.pid"):
        try:
            record = read_record(pidfile)
        except CorruptRecord:
            continue
        if record is None:
            continue
        if record.identity is not None and live_process(record.identity) is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(record.pid, signal.SIGKILL)
        cgroup = Path(record.cgroup)
        # Only an instance cgroup of relman's (named after the instance, in a relman tree):
        # a record names what it likes.
        ours = cgroup.name == record.instance and (
            cgroup.parent.parent.name == "relman" or cgroup.parent.name.startswith("relman-"))
        if record.cgroup and ours and (cgroup / "cgroup.kill").exists():
            with contextlib.suppress(OSError):
                (cgroup / "cgroup.kill").write_text("1")

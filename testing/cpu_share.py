"""A fixed CPU share for each simulated host (bench/fleet.py --host-cpu), so that n hosts on
one machine are n machines of one size: each host's daemon (and all it starts: git, uv,
the app servers) and each ssh session of its forced command run in a cgroup of the host's
own, with a CFS quota of CORES cores. The single-host baseline runs on such a host too.
The clients (bench/fleet.py's load threads and the front nginx it starts) get a group of
their own too (clients()), and the coordinator and the single deploy's ssh run outside any
(ROOT_FIRST), as on a machine of their own: neither takes from the hosts' CPU or the other.

cgroup v1's cpu controller: on these hybrid hosts the v2 hierarchy (/sys/fs/cgroup/unified)
has no cpu controller. Root makes the groups; each host's user may write its own group's
cgroup.procs, and a process moves itself in (`echo $$ > .../cgroup.procs; exec ...`)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Final

V1_CPU: Final = Path("/sys/fs/cgroup/cpu")
PERIOD_US: Final = 100_000
#: an argv prefix that runs its command in the root cpu group (no quota)
ROOT_FIRST: Final = ("/bin/sh", "-c", f'echo $$ > {V1_CPU}/cgroup.procs; exec "$@"', "sh")


class CpuShareError(RuntimeError):
    pass


class CpuShares:
    def __init__(self, tag: str, cores: float) -> None:
        if not (V1_CPU / "cpu.cfs_quota_us").exists():
            raise CpuShareError(f"{V1_CPU}: no cgroup v1 cpu controller here (--host-cpu 0 "
                                "runs without a share)")
        self.cores = cores
        self.parent = V1_CPU / f"relman-fleet-{tag}"
        self.parent.mkdir(exist_ok=True)

    def make(self, name: str, uid: int, gid: int, cores: float = 0.0) -> Path:
        """The group *name*: *cores* (else CORES) cores; *uid* may move its processes in."""
        group = self.parent / name
        group.mkdir(exist_ok=True)
        (group / "cpu.cfs_period_us").write_text(str(PERIOD_US))
        (group / "cpu.cfs_quota_us").write_text(str(round((cores or self.cores) * PERIOD_US)))
        os.chown(group / "cgroup.procs", uid, gid)
        return group

    def clients(self, cores: float) -> None:
        """This process (all its threads) and what it starts from now on into a group of
        *cores* cores, until remove()."""
        group = self.make("clients", os.getuid(), os.getgid(), cores)
        (group / "cgroup.procs").write_text(str(os.getpid()))

    @staticmethod
    def enter(group: Path) -> str:
        """Shell words that move the shell into *group*, for before an `exec`."""
        return f"echo $$ > {group}/cgroup.procs; "

    def remove(self) -> None:
        """rmdir the groups (a group empties as its processes exit; this one leaves)."""
        (V1_CPU / "cgroup.procs").write_text(str(os.getpid()))
        for group in [*self.parent.iterdir(), self.parent]:
            if not group.is_dir():
                continue
            deadline = time.monotonic() + 10
            while True:
                try:
                    group.rmdir()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.2)


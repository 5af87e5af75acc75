"""What a process costs while nothing happens: CPU time to the nanosecond and RSS, USS, PSS.

CPU comes from each thread's /proc/PID/task/TID/schedstat (time on a CPU, in ns), not from
utime + stime, whose unit is a clock tick (10 ms): over 60 s one tick is 0.017% of a core,
which is the whole idle cost of a daemon that does almost nothing, so ticks cannot tell two
such daemons apart. A thread that ends between two samples loses its last second at most.
USS (private pages) and PSS (shared pages split between their users) are fairer than RSS
when several processes share the interpreter and its libraries.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

MIB = 2**20


@dataclass(frozen=True)
class Memory:
    rss: int  # bytes
    uss: int
    pss: int


def memory(pid: int) -> Memory:
    """RSS, USS and PSS of *pid*, from /proc/PID/smaps_rollup (Linux >= 4.14)."""
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, _, value = line.partition(":")
        if value.strip().endswith("kB"):
            fields[name] = int(value.split()[0]) * 1024
    uss = fields["Private_Clean"] + fields["Private_Dirty"]
    return Memory(fields["Rss"], uss, fields["Pss"])


def thread_cpu_ns(pid: int) -> dict[int, int]:
    """Each thread's time on a CPU so far, in ns: {tid: ns}."""
    times = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            times[int(task.name)] = int((task / "schedstat").read_text().split()[0])
    return times


class CpuMeter:
    """CPU time a process used since the meter started, its threads' births and deaths
    included (a thread born since counts from 0, one that ended counts to its last sample)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.first = thread_cpu_ns(pid)
        self.last = dict(self.first)

    def sample(self) -> None:
        self.last.update(thread_cpu_ns(self.pid))

    def seconds(self) -> float:
        return sum(ns - self.first.get(tid, 0) for tid, ns in self.last.items()) / 1e9


@dataclass(frozen=True)
class Idle:
    cpu_percent: float  # of one core
    rss_mib: float  # means over the samples
    uss_mib: float
    pss_mib: float
    rss_max_mib: float
    threads: int  # at the end


def sample_idle(groups: dict[str, list[int]], seconds: float) -> dict[str, Idle]:
    """CPU time over *seconds*, memory once a second, for each named group of pids (all
    sampled in the same seconds, so they share the machine's conditions)."""
    meters = {name: [CpuMeter(pid) for pid in pids] for name, pids in groups.items()}
    samples: dict[str, list[Memory]] = {name: [] for name in groups}
    started = time.monotonic()
    while (now := time.monotonic()) - started < seconds:
        for name, pids in groups.items():
            mems = [memory(pid) for pid in pids]
            samples[name].append(Memory(sum(m.rss for m in mems), sum(m.uss for m in mems),
                                        sum(m.pss for m in mems)))
            for meter in meters[name]:
                meter.sample()
        time.sleep(min(1.0, max(0.0, started + seconds - now)))
    for group in meters.values():
        for meter in group:
            meter.sample()
    wall = time.monotonic() - started
    return {name: Idle(
        cpu_percent=100 * sum(m.seconds() for m in meters[name]) / wall,
        rss_mib=statistics.mean(s.rss for s in samples[name]) / MIB,
        uss_mib=statistics.mean(s.uss for s in samples[name]) / MIB,
        pss_mib=statistics.mean(s.pss for s in samples[name]) / MIB,
        rss_max_mib=max(s.rss for s in samples[name]) / MIB,
        threads=sum(len(list(Path(f"/proc/{pid}/task").iterdir())) for pid in groups[name]),
    ) for name in groups}

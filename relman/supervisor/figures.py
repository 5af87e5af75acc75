"""Process figures for `relman status`: workers, RSS, CPU and uptime, read with psutil."""

from __future__ import annotations

import contextlib
import time

import psutil

from relman.results import Figures


class ProcessFigures:
    """CPU % needs two readings of one process, so the psutil.Process objects are kept
    between status calls: a process seen before reports its CPU since the last call, a new
    one its average since it started (psutil's first cpu_percent() is always 0.0)."""

    def __init__(self) -> None:
        self._known: dict[tuple[int, float], psutil.Process] = {}

    def of(self, pid: int, *, with_children: bool = True) -> Figures | None:
        """Figures of *pid* and, with *with_children*, its descendants (the workers); None
        when psutil cannot read it (it has exited)."""
        try:
            proc = psutil.Process(pid)
            children = proc.children(recursive=True) if with_children else []
            rss, cpu = float(proc.memory_info().rss), self._cpu_percent(proc)
            for child in children:
                with contextlib.suppress(psutil.Error):  # a worker recycled meanwhile
                    rss += child.memory_info().rss
                    cpu += self._cpu_percent(child)
            figures = Figures(workers=len(children), rss=int(rss), cpu_percent=round(cpu, 1),
                              uptime=round(time.time() - proc.create_time(), 1))
        except psutil.Error:
            return None
        self._forget_exited()
        return figures

    def _cpu_percent(self, proc: psutil.Process) -> float:
        key = (proc.pid, proc.create_time())
        known = self._known.get(key)
        if known is not None:
            return float(known.cpu_percent(interval=None))
        self._known[key] = proc
        proc.cpu_percent(interval=None)  # the reference point for the next call
        times = proc.cpu_times()
        lifetime = max(time.time() - proc.create_time(), 1e-3)
        return 100.0 * (times.user + times.system) / lifetime

    def _forget_exited(self) -> None:
        for key, proc in list(self._known.items()):
            if not proc.is_running():
                del self._known[key]

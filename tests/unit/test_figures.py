"""ProcessFigures: CPU % from two readings of the same process, with real processes."""

from __future__ import annotations

import subprocess
import sys
import time

from relman.supervisor.figures import ProcessFigures

BUSY = "import time\nend = time.monotonic() + 30\nwhile time.monotonic() < end: pass\n"


def test_cpu_of_a_busy_process_is_not_zero() -> None:
    """psutil's first cpu_percent() of a new Process object is 0.0; ours is not, and the
    second call reports the time since the first."""
    proc = subprocess.Popen([sys.executable, "-c", BUSY])
    try:
        figures = ProcessFigures()
        time.sleep(0.3)
        first = figures.of(proc.pid)
        time.sleep(0.3)
        second = figures.of(proc.pid)
        assert first is not None
        assert second is not None
        assert first.cpu_percent > 0
        assert second.cpu_percent > 0
        assert second.workers == 0
        assert second.rss > 0
    finally:
        proc.kill()
        proc.wait()


def test_exited_process_has_no_figures_and_is_forgotten() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    figures = ProcessFigures()
    proc.wait()
    assert figures.of(proc.pid) is None
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        figures.of(live.pid)
    finally:
        live.kill()
        live.wait()
    figures.of(1, with_children=False)
    assert all(pid != live.pid for pid, _ in figures._known)

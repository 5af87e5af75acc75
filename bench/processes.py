"""[processes.NAME] workers (issue 9): the time with no worker running during a stop-first
handover against the slowest worker's own stop time, the same gap with handover = overlap
(goal: 0), the time from a worker's SIGKILL to its replacement's start (goal: < 1 s plus
the worker's own start), and the daemon's idle CPU and RSS with 1 server + 4 workers
(goal: under 0.5% of a core and 60 MB) next to the same daemon with no worker.

    .venv/bin/python bench/processes.py [--runs 5] [--kills 4] [--idle-seconds 30]

Everything runs on loopback in a temp dir: the sample app (gunicorn, 1 worker) with two
process types running testing/apps/sample/worker.py, "worker" (stop-first) and "overlap"
(handover = overlap); `relman scale` picks which type runs in each part. Each worker takes
STOP_DELAY seconds to finish its task after the stop signal and writes one line per event
(started, signal, task_finished, stopped) to shared/events: the figures come from those
stamps. Only pids that `relman --json ps` reports are ever signalled (and the workers this
script starts itself to time a worker's own start). Ratios are within this one run.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from relman.supervisor.restart import MIN_UPTIME
from testing.daemon import RelmanDaemon, make_base_dir, write_config
from testing.git import make_app_repo, release_version
from testing.leftovers import kill_leftover_servers
from testing.waiting import wait_until

COUNT = 4
STOP_DELAY = 0.5  # seconds a worker takes to finish its task after the stop signal
START_SECONDS = 1.0
VERIFY_WINDOW = 5.0  # short, so that live checks are over before the idle figures
CPU_GOAL = 0.5  # % of one core
RSS_GOAL = 60.0  # MB (10**6 bytes)
KILL_GOAL = 1.0  # seconds on top of the worker's own start
MB = 10**6


@dataclass(frozen=True)
class Event:
    at: float  # time.time() in the worker
    what: str
    process: str
    index: int
    release: str
    pid: int


@dataclass
class Stack:
    base: Path
    app: RelmanDaemon
    repo: Path
    root: Path
    versions: int = 0
    deployed_at: float = 0.0

    def events(self) -> list[Event]:
        path = self.root / "shared" / "events"
        found = []
        for line in path.read_text().splitlines() if path.exists() else []:
            stamp, *what, process, index, release, pid = line.split()
            found.append(Event(float(stamp), " ".join(what), process, int(index), release,
                               int(pid)))
        return found

    def ps(self, name: str) -> list[dict[str, Any]]:
        return [i for i in self.app.json("ps")["instances"] if i["process"] == name]

    def live(self) -> str:
        return str(self.app.json("status")["live"])

    def deploy_new(self) -> str:
        """Commit and deploy a new version; its release id."""
        self.versions += 1
        release_version(self.repo, f"r{self.versions}")
        self.app.relman("deploy", f"r{self.versions}", check=True)
        self.deployed_at = time.time()
        return self.live()

    def scale(self, *args: str) -> None:
        self.app.relman("scale", *args, check=True)


def make_stack(base: Path) -> Stack:
    repo = make_app_repo(base / "repo")
    release_version(repo, "r0", extra={"WORKER_STOP_DELAY": f"{STOP_DELAY}"})
    root = base / "sample"
    command = ["python", "worker.py", "{root}/shared/events"]
    worker = {"command": command, "stop_timeout": 10, "start_seconds": START_SECONDS}
    config = write_config(
        base / "sample.toml", name="sample", repo=repo, root=root,
        server={"kind": "gunicorn", "app": "app:server", "workers": 1},
        health={"path": "/health", "timeout": 30}, swap={"verify_window": VERIFY_WINDOW},
        processes={"worker": {**worker, "count": COUNT},
                   "overlap": {**worker, "count": 0, "handover": "overlap"}})
    stack = Stack(base, RelmanDaemon(config), repo, root)
    stack.app.init()
    stack.app.start()
    stack.app.relman("deploy", "r0", check=True)
    stack.deployed_at = time.time()
    return stack


def clean_up(stack: Stack | None, base: Path) -> None:
    """Stop the daemon (it stops the app), then SIGKILL what its instance records still
    name."""
    if stack is not None:
        with contextlib.suppress(Exception):
            stack.app.stop()
        kill_leftover_servers(stack.root)
    shutil.rmtree(base, ignore_errors=True)


# --- 1 and 2. handovers -------------------------------------------------------------------

@dataclass
class Handover:
    stop_times: list[float]  # each old worker's signal -> stopped
    first_signal: float
    last_signal: float
    last_stopped: float
    first_started: float  # of the new release's workers
    last_started: float
    first_spawned: float  # the first new worker's spawn, as `relman ps` reports it

    @property
    def gap(self) -> float:
        """No worker of either release running: last old stopped -> first new started
        (negative: they overlapped)."""
        return self.first_started - self.last_stopped

    @property
    def handover(self) -> float:
        """First old stop signal -> first new worker started."""
        return self.first_started - self.first_signal

    @property
    def to_spawn(self) -> float:
        """Last old stopped -> first new spawned: relman's part of the gap."""
        return self.first_spawned - self.last_stopped

    @property
    def together(self) -> float:
        """Both releases' workers running: first new started -> last old stopped."""
        return max(0.0, self.last_stopped - self.first_started)

    @property
    def lead(self) -> float:
        """Every new worker up -> first old stop signal."""
        return self.first_signal - self.last_started


def handover_once(stack: Stack, name: str) -> Handover:
    """Deploy a new version; the handover of *name*'s workers, from their events."""
    old = stack.live()
    new = stack.deploy_new()

    def done() -> list[Event] | None:
        seen = [e for e in stack.events() if e.process == name]
        stopped = [e for e in seen if e.release == old and e.what == "stopped"]
        started = [e for e in seen if e.release == new and e.what == "started"]
        return seen if len(stopped) >= COUNT and len(started) >= COUNT else None

    seen = wait_until(done, timeout=30, what=f"{name}: {COUNT} old stopped, new started")
    signals = {e.pid: e.at for e in seen if e.release == old and e.what.startswith("signal")}
    stopped = {e.pid: e.at for e in seen if e.release == old and e.what == "stopped"}
    started = [e.at for e in seen if e.release == new and e.what == "started"]
    spawned = min(i["started"] for i in stack.ps(name) if i["release"] == new)
    return Handover([stopped[pid] - signals[pid] for pid in stopped if pid in signals],
                    min(signals.values()), max(signals.values()), max(stopped.values()),
                    min(started), max(started), spawned)


# --- 3. SIGKILL of a worker ---------------------------------------------------------------

def own_start_seconds(stack: Stack, n: int = 5) -> float:
    """Median spawn -> "started" of worker.py run by this script with a live worker's
    interpreter (its venv's python, first on its PATH) in its directory."""
    proc = psutil.Process(stack.ps("worker")[0]["pid"])
    python = Path(proc.environ()["PATH"].split(os.pathsep)[0]) / "python"
    times = []
    for _ in range(n):
        started = time.time()
        child = subprocess.Popen([str(python), "worker.py", str(stack.base / "own-events")],
                                 cwd=proc.cwd(), stdout=subprocess.PIPE, text=True)
        assert child.stdout is not None
        line = child.stdout.readline()
        times.append(float(line.split()[0]) - started)
        child.kill()
        child.wait(10)
    return statistics.median(times)


def kill_once(stack: Stack, index: int) -> tuple[float, float]:
    """SIGKILL worker *index* (a pid ps reports) once it has run past MIN_UPTIME, so that
    this is a first crash (no backoff); seconds until its replacement says "started", and
    until its spawn (`relman ps`'s "started")."""
    (victim,) = [i for i in stack.ps("worker") if i["index"] == index]
    pid = victim["pid"]
    born = max(e.at for e in stack.events() if e.pid == pid and e.what == "started")
    time.sleep(max(0.0, born + MIN_UPTIME + 0.5 - time.time()))
    created = psutil.Process(pid).create_time()
    if pid not in {i["pid"] for i in stack.ps("worker")}:
        raise AssertionError(f"worker {index} pid {pid} left ps before its kill")
    if abs(psutil.Process(pid).create_time() - created) > 0.01:
        raise AssertionError(f"pid {pid} was reused")
    killed = time.time()
    os.kill(pid, signal.SIGKILL)

    def replacement() -> Event | None:
        return next((e for e in stack.events() if e.what == "started" and e.index == index
                     and e.process == "worker" and e.at > killed), None)

    new = wait_until(replacement, timeout=30, interval=0.01, what="a replacement started")
    line = wait_until(lambda: next((i for i in stack.ps("worker") if i["pid"] == new.pid),
                                   None), timeout=10, what="ps to list the replacement")
    return new.at - killed, line["started"] - killed


# --- 4. idle cost -------------------------------------------------------------------------

@dataclass
class Idle:
    cpu_percent: float  # of one core
    rss_mb: float  # mean of one sample a second
    rss_max_mb: float


def sample_idle(pid: int, seconds: float) -> Idle:
    proc = psutil.Process(pid)
    cpu0 = sum(proc.cpu_times()[:2])
    rss = []
    started = time.monotonic()
    while (now := time.monotonic()) - started < seconds:
        rss.append(proc.memory_info().rss)
        time.sleep(min(1.0, max(0.0, started + seconds - now)))
    wall = time.monotonic() - started
    return Idle(100 * (sum(proc.cpu_times()[:2]) - cpu0) / wall,
                statistics.mean(rss) / MB, max(rss) / MB)


def idle_pair(stack: Stack, seconds: float) -> tuple[Idle, Idle]:
    """The daemon idle with 1 server + COUNT workers, then with the workers scaled to 0."""
    time.sleep(max(0.0, stack.deployed_at + VERIFY_WINDOW + 1 - time.time()))
    daemon = stack.app.json("status")["daemon"]["pid"]
    if len(stack.ps("worker")) != COUNT:
        raise AssertionError(f"expected {COUNT} workers: {stack.ps('worker')}")
    with_workers = sample_idle(daemon, seconds)
    stack.scale("worker=0")
    wait_until(lambda: not stack.ps("worker"), timeout=30, what="no worker")
    time.sleep(1.0)
    return with_workers, sample_idle(daemon, seconds)


# --- report -------------------------------------------------------------------------------

def spread(values: list[float], unit: str = "s") -> str:
    return (f"min {min(values):.3f} {unit}  median {statistics.median(values):.3f} {unit}  "
            f"max {max(values):.3f} {unit}")


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b > 0 else "n/a (divisor 0)"


def print_stop_first(runs: list[Handover], own: float) -> int:
    slowest = [max(h.stop_times) for h in runs]
    gaps = [h.gap for h in runs]
    over = [h.handover - s for h, s in zip(runs, slowest, strict=True)]
    med = statistics.median
    print(f"1. stop-first handover, {COUNT} workers, each finishing its task "
          f"{STOP_DELAY} s after the signal (n={len(runs)} deploys)")
    print(f"   slowest worker's own stop (signal -> stopped):    {spread(slowest)}")
    print(f"   gap, no worker running (last stopped -> first new started): {spread(gaps)}")
    print(f"   gap / slowest stop, median:                       {ratio(med(gaps), med(slowest))}")
    print(f"   handover (first signal -> first new started):     "
          f"{spread([h.handover for h in runs])}")
    print(f"   relman's overhead = handover - slowest stop:      {spread(over)}")
    print(f"   last old stopped -> first new spawned (ps):       "
          f"{spread([h.to_spawn for h in runs])}")
    print(f"     (the worker's own start, spawn -> started, run alone: {own:.3f} s)")
    print(f"   signals sent within (first -> last old signal), max: "
          f"{max(h.last_signal - h.first_signal for h in runs):.3f} s")
    bad = sum(g < 0 for g in gaps)
    print(f"   deploys where a new worker started before the last old one stopped: {bad} "
          "(goal: 0)")
    return 1 if bad else 0


def print_overlap(runs: list[Handover]) -> int:
    gaps = [max(0.0, h.gap) for h in runs]
    print(f"2. overlap handover, {COUNT} workers, start_seconds = {START_SECONDS} "
          f"(n={len(runs)} deploys)")
    print(f"   time with no worker of either release running: {spread(gaps)} (goal: 0)")
    print(f"   every new one up -> first old signal:  {spread([h.lead for h in runs])} "
          f"(start_seconds {START_SECONDS} counts from the spawn)")
    print(f"   both releases running together:        {spread([h.together for h in runs])}"
          f"; / start_seconds, median: "
          f"{ratio(statistics.median([h.together for h in runs]), START_SECONDS)}")
    return 1 if any(gaps) else 0


def print_kills(kills: list[tuple[float, float]], own: float) -> int:
    times = [k[0] for k in kills]
    relman = [t - own for t in times]
    print(f"3. SIGKILL of a worker -> its replacement's \"started\" (n={len(times)}, each a "
          f"first crash: the victim ran > MIN_UPTIME {MIN_UPTIME:.0f} s)")
    print(f"   replacement:                           {spread(times)}")
    print(f"   the worker's own start (spawn -> started, median of 5 run by this script): "
          f"{own:.3f} s")
    print(f"   replacement - own start (relman's part): {spread(relman)} (goal: < {KILL_GOAL} s)")
    print(f"   SIGKILL -> replacement spawned (ps):     {spread([k[1] for k in kills])}")
    print(f"   spawned -> started, under the daemon:    "
          f"{spread([k[0] - k[1] for k in kills])}")
    print(f"   replacement / own start, median: {ratio(statistics.median(times), own)}")
    return 1 if statistics.median(relman) >= KILL_GOAL else 0


def print_idle(busy: Idle, empty: Idle, seconds: float) -> int:
    print(f"4. daemon idle over {seconds:.0f} s each, no requests, no CLI calls, "
          f"verify window ({VERIFY_WINDOW:.0f} s) over")
    print(f"   {'':28} {'CPU % of 1 core':>16} {'RSS MB mean':>12} {'RSS MB max':>11}")
    for name, idle in ((f"1 server + {COUNT} workers", busy), ("1 server, 0 workers", empty)):
        print(f"   {name:28} {idle.cpu_percent:16.3f} {idle.rss_mb:12.1f} "
              f"{idle.rss_max_mb:11.1f}")
    print(f"   with / without workers: CPU {ratio(busy.cpu_percent, empty.cpu_percent)}, "
          f"RSS {ratio(busy.rss_mb, empty.rss_mb)}")
    tick = 100 / (os.sysconf("SC_CLK_TCK") * seconds)
    print(f"   (CPU time counts in clock ticks: one tick over {seconds:.0f} s is {tick:.3f}%)")
    missed = busy.cpu_percent >= CPU_GOAL or busy.rss_max_mb >= RSS_GOAL
    print(f"   goal: < {CPU_GOAL}% of a core and < {RSS_GOAL:.0f} MB with workers: "
          f"{'missed' if missed else 'met'}")
    return 1 if missed else 0


# --- main ---------------------------------------------------------------------------------

def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--runs", type=int, default=5, help="deploys for each handover")
    parser.add_argument("--kills", type=int, default=4, help="worker SIGKILLs")
    parser.add_argument("--idle-seconds", type=float, default=30.0)
    return parser.parse_args()


def run(stack: Stack, args: argparse.Namespace) -> int:
    stop_first = [handover_once(stack, "worker") for _ in range(args.runs)]
    own = own_start_seconds(stack)
    status = print_stop_first(stop_first, own)
    sys.stdout.flush()
    stack.scale("worker=0", f"overlap={COUNT}")
    wait_until(lambda: len(stack.ps("overlap")) == COUNT and not stack.ps("worker"),
               timeout=30, what="the overlap workers alone")
    status |= print_overlap([handover_once(stack, "overlap") for _ in range(args.runs)])
    sys.stdout.flush()
    stack.scale("--reset")
    wait_until(lambda: len(stack.ps("worker")) == COUNT and not stack.ps("overlap"),
               timeout=30, what=f"{COUNT} workers again")
    kills = [kill_once(stack, 1 + n % COUNT) for n in range(args.kills)]
    status |= print_kills(kills, own)
    sys.stdout.flush()
    return status | print_idle(*idle_pair(stack, args.idle_seconds), args.idle_seconds)


def main() -> None:
    args = parse_args()
    os.environ.setdefault("UV_CACHE_DIR", os.path.expanduser("~/.cache/relman-tests-uv"))
    os.environ.setdefault("UV_PYTHON_DOWNLOADS", "never")
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"relman processes bench: sample app, gunicorn 1 worker + {COUNT} workers, "
          f"{os.cpu_count()} cores, load average {load}", flush=True)
    base = make_base_dir("relman-bench-processes-")
    stack: Stack | None = None
    status = 1
    try:
        stack = make_stack(base)
        status = run(stack, args)
    finally:
        clean_up(stack, base)
    raise SystemExit(status)


if __name__ == "__main__":
    main()

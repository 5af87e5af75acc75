"""Supervision: time from a SIGKILL of the live app server to serving again, a SIGKILL of
the daemon itself (the app must keep serving; the restarted daemon adopts it), the
daemon's idle cost next to supervisord's and a gunicorn master's, and the processes lost
(goal: none) after random SIGKILLs of the daemon during restarts and deploys of an app
whose gunicorn renames itself (setproctitle) and forks a helper into its own session.

supervisord (4.3, from the test extras) runs the same release's gunicorn, same workers, on
a socket of its own, in the same run: both are SIGKILLed the same way, and both sit idle in
the same minute. Exits 1 when issue 11's goal is missed: idle CPU and RSS at or below
supervisord's, and SIGKILL to serving no slower than before (REACTION_BEFORE).

    .venv/bin/python bench/supervise.py [--kills 5] [--idle-seconds 60] [--daemon-gap 1]
                                        [--random-kills 20] [--seed N]

Everything runs on loopback in a temp dir: the sample app (gunicorn, 2 workers) in a local
git repo and a real relman daemon; requests go straight to run/app.sock. Only the pids that
`relman status` reports, the daemons this script started and supervisord's child are ever
signalled. Figures are also given as ratios within this one run: the machine is noisy.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import signal
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from relman.supervisor.restart import MIN_UPTIME
from testing.daemon import RelmanDaemon, make_base_dir, write_config
from testing.git import make_app_repo, release_version
from testing.healthprobe import Prober, answers_from_new_server
from testing.idle import Idle, sample_idle
from testing.leftovers import kill_leftover_servers as kill_leftovers_under
from testing.supervisord import Supervisord, write_conf
from testing.tracked import TRACKED, app_procs, orphans
from testing.waiting import wait_until

POLL = 0.01  # seconds between health GETs
# A short probation, over before the idle figures are taken (live checks are not idle work).
VERIFY_WINDOW = 20.0
# Issue 11's goal keeps the reaction to a SIGKILL as it was: median 0.285 s (README,
# 2026-11-29, before the daemon was made lighter), with a little room for a noisy machine.
REACTION_BEFORE = 0.30


# --- the stack ----------------------------------------------------------------------------

@dataclass
class Bench:
    base: Path
    app: RelmanDaemon
    sock: Path
    release: str = ""
    deployed_at: float = 0.0
    servers: dict[int, float] = field(default_factory=dict)  # pid -> create_time we saw

    def status(self) -> dict[str, Any]:
        result: dict[str, Any] = self.app.json("status")
        return result

    def live_pid(self) -> int | None:
        pid = next((s["pid"] for s in self.status()["servers"] if s["live"]), None)
        if pid is not None:
            with contextlib.suppress(psutil.Error):
                self.servers[pid] = psutil.Process(pid).create_time()
        return pid

    def wait_live_pid(self) -> int:
        pid = wait_until(self.live_pid, timeout=30, what="a live server")
        assert pid is not None
        return pid


def make_bench(base: Path) -> Bench:
    """The sample app's repo and config in *base*; nothing runs yet."""
    repo = make_app_repo(base / "repo")
    root = base / "sample"
    config = write_config(base / "sample.toml", name="sample", repo=repo, root=root,
                          server={"kind": "gunicorn", "app": "app:server", "workers": 2},
                          health={"path": "/health", "timeout": 30},
                          swap={"verify_window": VERIFY_WINDOW})
    return Bench(base, RelmanDaemon(config), root / "run" / "app.sock")


def deploy(bench: Bench) -> None:
    bench.app.init()
    bench.app.start()
    bench.app.relman("deploy", "v1", check=True)
    bench.deployed_at = time.time()
    bench.release = bench.status()["live"]


def clean_up(bench: Bench | None, base: Path) -> None:
    """Stop the daemon (it stops the servers), then SIGKILL any server still running: only
    pids whose pidfile identity or the create time we saw still holds."""
    if bench is not None:
        with contextlib.suppress(Exception):
            bench.app.stop()
        kill_leftover_servers(bench)
    shutil.rmtree(base, ignore_errors=True)


def kill_leftover_servers(bench: Bench) -> None:
    kill_leftovers_under(bench.base / "sample")
    for pid, created in bench.servers.items():
        with contextlib.suppress(psutil.Error, ProcessLookupError):
            if abs(psutil.Process(pid).create_time() - created) < 0.05:
                os.killpg(pid, signal.SIGKILL)


# --- 1. SIGKILL of the live server --------------------------------------------------------

def kill_server_once(sock: Path, live_pid: Callable[[], int | None]) -> float:
    """SIGKILL the process group of the gunicorn master that *live_pid* names; seconds until
    a new server answers 200 on *sock*."""
    pid = wait_until(live_pid, timeout=30, what="a live server")
    proc = psutil.Process(pid)
    # Past MIN_UPTIME each kill is a first crash: restarted at once, no backoff (for
    # supervisord too: well past its startsecs). relman counts a server's uptime from a
    # little after its process was created (spawn, health gate): with a margin of 0.5 s,
    # under load, kills were taken for a crash loop and backed off (0.5, 1, 2 s).
    time.sleep(max(0.0, proc.create_time() + MIN_UPTIME + 2.0 - time.time()))
    old = {pid, *(c.pid for c in proc.children(recursive=True))}
    started = time.monotonic()
    os.killpg(pid, signal.SIGKILL)
    wait_until(lambda: answers_from_new_server(sock, old), timeout=60, interval=POLL,
               what="the app to serve again")
    elapsed = time.monotonic() - started
    wait_until(lambda: live_pid() not in (None, *old), timeout=30, what="a new live pid")
    return elapsed


# --- 1c. supervisord with the same app ------------------------------------------------------

def start_supervisord(bench: Bench) -> tuple[Supervisord, Path]:
    """supervisord running the live release's gunicorn as relman does (same workers), on a
    socket of its own; (supervisord, that socket)."""
    base = bench.base / "supervisord"
    base.mkdir()
    release = (bench.base / "sample" / "current").resolve()
    sock = base / "app.sock"
    command = [str(release / ".venv" / "bin" / "gunicorn"), "--bind", f"unix:{sock}",
               "--workers", "2", "--chdir", str(release), "app:server"]
    sup = Supervisord(write_conf(base, "sample", command, release)).start()
    try:
        wait_until(lambda: answers_from_new_server(sock, set()), timeout=30,
                   what="supervisord's gunicorn to answer")
    except BaseException:
        sup.stop()
        raise
    return sup, sock


# --- 1b. SIGKILL of the daemon ------------------------------------------------------------

@dataclass
class DaemonKill:
    adopt: float  # seconds from starting the daemon again to status naming the live release
    sent: int
    failed: int
    same_pid: bool
    errors: list[str]


def kill_daemon_once(bench: Bench, gap: float) -> DaemonKill:
    """kill -9 the daemon, leave the app alone *gap* seconds, start a daemon again."""
    pid = bench.live_pid()
    with Prober(bench.sock, POLL) as probe:
        time.sleep(0.2)
        bench.app.kill9()
        time.sleep(gap)
        started = time.monotonic()
        bench.app.start()
        wait_until(lambda: bench.status()["live"] == bench.release, timeout=60, interval=POLL,
                   what="the restarted daemon to adopt the live release")
        adopt = time.monotonic() - started
        time.sleep(0.2)
    return DaemonKill(adopt, probe.sent, probe.failed, bench.live_pid() == pid,
                      probe.errors[:3])


def status_call_seconds(bench: Bench, n: int = 5) -> float:
    """Median wall time of one `relman --json status` (the adopt figure's resolution)."""
    times = []
    for _ in range(n):
        started = time.monotonic()
        bench.status()
        times.append(time.monotonic() - started)
    return statistics.median(times)


# --- 2. idle cost -------------------------------------------------------------------------

def idle_groups(bench: Bench, sup: Supervisord) -> dict[str, list[int]]:
    assert bench.app.proc is not None
    master = psutil.Process(bench.wait_live_pid())
    return {"relman daemon": [bench.app.proc.pid], "supervisord": [sup.pid],
            "gunicorn master": [master.pid],
            "gunicorn master + 2 workers": [master.pid,
                                            *(c.pid for c in master.children(recursive=True))]}


# --- report -------------------------------------------------------------------------------

def spread(values: list[float], unit: str = "s") -> str:
    return (f"min {min(values):.3f} {unit}  median {statistics.median(values):.3f} {unit}  "
            f"max {max(values):.3f} {unit}")


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b > 0 else "n/a (divisor 0)"


def print_server_kills(relman: list[float], supervisord: list[float]) -> None:
    print(f"1. SIGKILL of the gunicorn master's process group -> GET /health 200 again "
          f"(n={len(relman)} each, poll {POLL * 1000:.0f} ms)")
    print(f"   relman       {spread(relman)}  ({', '.join(f'{t:.3f}' for t in relman)})")
    print(f"   supervisord  {spread(supervisord)}  "
          f"({', '.join(f'{t:.3f}' for t in supervisord)})")
    print(f"   relman / supervisord, median: "
          f"{ratio(statistics.median(relman), statistics.median(supervisord))}")
    print(f"   kills spaced > restart MIN_UPTIME ({MIN_UPTIME:.0f} s): each is a first crash, "
          f"restarted without backoff")


def print_daemon_kills(kills: list[DaemonKill], gap: float, status_s: float) -> None:
    print(f"1b. SIGKILL of the daemon, {gap:.1f} s without a daemon, then a new daemon "
          f"(n={len(kills)})")
    print(f"   adopt (start -> `relman status` shows the live release): "
          f"{spread([k.adopt for k in kills])}")
    print(f"   one `relman --json status` call: {status_s:.3f} s (the adopt figure's "
          f"resolution); adopt / status call, median: "
          f"{ratio(statistics.median([k.adopt for k in kills]), status_s)}")
    sent, failed = sum(k.sent for k in kills), sum(k.failed for k in kills)
    print(f"   GET /health every {POLL * 1000:.0f} ms across kill, absence and restart: "
          f"sent {sent}, failed {failed} (expected 0)")
    print(f"   same server pid adopted (no second copy started): "
          f"{sum(k.same_pid for k in kills)}/{len(kills)}")
    for error in (e for k in kills for e in k.errors):
        print(f"   failure: {error}")


def print_idle(idle: dict[str, Idle], seconds: float) -> None:
    print(f"2. Idle cost over {seconds:.0f} s, app deployed, no requests, no CLI calls "
          f"(swap.verify_window = {VERIFY_WINDOW:.0f} s, over: no live checks); CPU from "
          "schedstat (ns), memory means of 1 s samples")
    print(f"   {'':28} {'CPU % of 1 core':>16} {'RSS MiB':>8} {'USS MiB':>8} {'PSS MiB':>8} "
          f"{'RSS max':>8} {'threads':>7}")
    for name, f in idle.items():
        print(f"   {name:28} {f.cpu_percent:16.4f} {f.rss_mib:8.1f} {f.uss_mib:8.1f} "
              f"{f.pss_mib:8.1f} {f.rss_max_mib:8.1f} {f.threads:7d}")
    daemon, sup, master = idle["relman daemon"], idle["supervisord"], idle["gunicorn master"]
    print("3. Ratios (same run)")
    print(f"   relman daemon / supervisord:  CPU {ratio(daemon.cpu_percent, sup.cpu_percent)}  "
          f"RSS {ratio(daemon.rss_mib, sup.rss_mib)}  USS {ratio(daemon.uss_mib, sup.uss_mib)}  "
          f"PSS {ratio(daemon.pss_mib, sup.pss_mib)}")
    print(f"   relman daemon / gunicorn master:  CPU "
          f"{ratio(daemon.cpu_percent, master.cpu_percent)}  RSS "
          f"{ratio(daemon.rss_mib, master.rss_mib)}")


def goal_missed(idle: dict[str, Idle], relman_kills: list[float]) -> list[str]:
    """What misses issue 11's goal: idle CPU and RSS at or below supervisord's, and the
    reaction to a SIGKILL no worse than before (REACTION_BEFORE)."""
    daemon, sup = idle["relman daemon"], idle["supervisord"]
    missed = []
    if daemon.cpu_percent > sup.cpu_percent:
        missed.append(f"idle CPU {daemon.cpu_percent:.4f}% > supervisord's "
                      f"{sup.cpu_percent:.4f}%")
    if daemon.rss_mib > sup.rss_mib:
        missed.append(f"idle RSS {daemon.rss_mib:.1f} MiB > supervisord's {sup.rss_mib:.1f} MiB")
    if (reaction := statistics.median(relman_kills)) > REACTION_BEFORE:
        missed.append(f"SIGKILL to serving {reaction:.3f} s > {REACTION_BEFORE} s (before)")
    return missed


# --- main ---------------------------------------------------------------------------------

# --- 4. orphans after random daemon kills, setproctitle app ------------------------------

def orphan_run(kills: int, seed: int) -> tuple[int, int, str]:
    """*kills* SIGKILLs of the daemon at random moments of restarts and deploys of the
    setproctitle app (with a double-forked helper): (orphans, left after stop, tracking)."""
    rng = random.Random(seed)
    base = make_base_dir("relman-bench-orphans-")
    bench: Bench | None = None
    try:
        bench = make_bench(base)
        deploy(bench)
        repo, root = base / "repo", base / "sample"
        for version in ("v2", "v3"):
            release_version(repo, version, extra={**TRACKED, "VERSION": f"{version}\n"})
        bench.app.relman("deploy", "v2", check=True)
        for n in range(kills):
            job = ["restart"] if n % 2 == 0 else ["deploy", rng.choice(["v2", "v3"])]
            runner = threading.Thread(target=bench.app.relman, args=job, daemon=True)
            runner.start()
            time.sleep(rng.uniform(0.05, 0.9))
            bench.app.kill9()
            runner.join(60)
            bench.app.start()
        wait_until(lambda: (s := bench.status())["job"] is None and s["live"], timeout=60,
                   what="the live release, no job")
        time.sleep(1.0)  # a server being stopped by reconcile finishes leaving
        lost = orphans(root, bench.status()["servers"])
        bench.app.relman("stop", check=True)
        with contextlib.suppress(TimeoutError):
            wait_until(lambda: not app_procs(root), timeout=30, what="nothing left")
        return len(lost), len(app_procs(root)), tracking_mode(bench)
    finally:
        clean_up(bench, base)


def tracking_mode(bench: Bench) -> str:
    """How the daemon tracked its processes, as it logged it (tracking.chosen)."""
    log = bench.app.log.read_text(errors="replace")
    return "cgroup" if "mode='cgroup'" in log else "tags"


def print_orphans(kills: int, seed: int) -> int:
    lost, left, mode = orphan_run(kills, seed)
    print(f"4. {kills} SIGKILLs of the daemon at random moments of restarts and deploys "
          f"(seed {seed}), gunicorn renamed by setproctitle, a setsid helper per worker, "
          f"tracking by {mode}")
    print(f"   processes in the app root belonging to no instance status lists: {lost} "
          "(goal: 0)")
    print(f"   processes left after `relman stop`: {left} (goal: 0)")
    return 1 if lost or left else 0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--kills", type=int, default=5, help="SIGKILLs of each kind")
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument("--daemon-gap", type=float, default=1.0,
                        help="seconds the app runs without a daemon after its SIGKILL")
    parser.add_argument("--random-kills", type=int, default=20,
                        help="daemon SIGKILLs during restarts and deploys (orphan count); "
                        "0 skips that part")
    parser.add_argument("--seed", type=int, default=time.time_ns() % 10**6)
    return parser.parse_args()


def run(bench: Bench, args: argparse.Namespace) -> int:
    sup, sup_sock = start_supervisord(bench)
    try:
        relman_times = [kill_server_once(bench.sock, bench.live_pid) for _ in range(args.kills)]
        sup_times = [kill_server_once(sup_sock, sup.program_pid) for _ in range(args.kills)]
        print_server_kills(relman_times, sup_times)
        kills = [kill_daemon_once(bench, args.daemon_gap) for _ in range(args.kills)]
        print_daemon_kills(kills, args.daemon_gap, status_call_seconds(bench))
        sys.stdout.flush()
        # Idle means after the switch's probation: no live checks (a daemon restart no
        # longer ends it; state/run.json keeps the switch time).
        time.sleep(max(0.0, bench.deployed_at + VERIFY_WINDOW + 1 - time.time()))
        idle = sample_idle(idle_groups(bench, sup), args.idle_seconds)
        print_idle(idle, args.idle_seconds)
    finally:
        sup.stop()
    missed = goal_missed(idle, relman_times)
    print(f"   goal (issue 11): {'missed: ' + '; '.join(missed) if missed else 'reached'}")
    lost = print_orphans(args.random_kills, args.seed) if args.random_kills else 0
    return 1 if missed or lost or any(k.failed or not k.same_pid for k in kills) else 0


def main() -> None:
    args = parse_args()
    os.environ.setdefault("UV_CACHE_DIR", os.path.expanduser("~/.cache/relman-tests-uv"))
    os.environ.setdefault("UV_PYTHON_DOWNLOADS", "never")
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"relman supervision bench: sample app, gunicorn 2 workers, {os.cpu_count()} cores, "
          f"load average {load}", flush=True)
    base = make_base_dir("relman-bench-supervise-")
    bench: Bench | None = None
    status = 1
    try:
        bench = make_bench(base)
        deploy(bench)
        status = run(bench, args)
    finally:
        clean_up(bench, base)
    raise SystemExit(status)


if __name__ == "__main__":
    main()

"""`make demo`: a sample app in a local git repo, deployed, swapped under traffic, rolled back.

The app has a web server and a worker ([processes.worker], two instances of the sample
app's worker.py, handover stop-first): each swap hands the worker over after the web switch
is verified, and the summary shows it from `relman --json ps` and from the lines the
workers write to shared/events ("<time> <event> <process> <index> <release> <pid>").

Everything happens in a temp dir on loopback and is removed at the end. With nginx
installed, traffic goes through a private nginx on a free port, as in production.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testing.daemon import RelmanDaemon, make_base_dir, write_config
from testing.git import make_app_repo, release_version
from testing.load import Load, LoadResult
from testing.nginx import PrivateNginx, nginx_binary
from testing.stack import nginx_user_and_group, start_nginx, tear_down

BOLD, DIM, RESET = ("\033[1m", "\033[2m", "\033[0m") if sys.stdout.isatty() else ("", "", "")
WORKERS = 2
STOP_DELAY = 0.3  # seconds a worker takes to finish its task after SIGTERM (WORKER_STOP_DELAY)


def say(text: str) -> None:
    print(f"\n{BOLD}==> {text}{RESET}", flush=True)


def run(app: RelmanDaemon, *args: str) -> float:
    """Run a relman command, echo its streamed progress, return its wall time."""
    print(f"{DIM}$ relman {' '.join(args)}{RESET}", flush=True)
    started = time.monotonic()
    proc = app.relman(*args)
    elapsed = time.monotonic() - started
    for line in (proc.stdout + proc.stderr).splitlines():
        if not line.startswith("[build]  +") and "Counting objects" not in line:
            print(f"  {line}")
    if proc.returncode != 0:
        print(f"relman {' '.join(args)} failed (exit {proc.returncode})\n{app.log_tail()}")
        raise SystemExit(proc.returncode)
    return elapsed


def swap_under_load(app: RelmanDaemon, url: str, *args: str) -> tuple[float, LoadResult]:
    with Load(url, ("/slow?ms=50", "/"), concurrency=16, max_seconds=120) as load:
        time.sleep(1.0)
        elapsed = run(app, *args)
        time.sleep(0.5)
    return elapsed, load.result


def start_stack(base: Path, repo: Path) -> tuple[RelmanDaemon, PrivateNginx | None, str]:
    """Write the config, start a private nginx when installed, then the daemon."""
    _user, group = nginx_user_and_group()
    health: dict[str, object] = {"path": "/health", "timeout": 30}
    nginx: PrivateNginx | None = None
    if nginx_binary():
        nginx = start_nginx(base, name="demo", root=base / "demo", protocol="http")
        health["nginx_url"] = f"{nginx.url}/health"
        url = nginx.url
        print(f"  private nginx on {nginx.url} -> {base}/demo/run/app.sock")
    else:
        url = f"unix:{base}/demo/run/app.sock"
        print("  nginx is not installed: traffic goes straight to run/app.sock")
    config = write_config(base / "relman.toml", name="demo", repo=repo, root=base / "demo",
                          server={"kind": "gunicorn", "app": "app:server", "workers": 2,
                                  "socket_group": group},
                          health=health, swap={"drain_timeout": 10, "stop_timeout": 10},
                          **{"processes.worker": {
                              "command": ["python", "worker.py", "{root}/shared/events"],
                              "count": WORKERS, "handover": "stop-first",
                              "stop_timeout": 10, "start_seconds": 0.5}})
    print(f"  config: {config}")
    app = RelmanDaemon(config)
    say("relman init, then the daemon")
    app.init()
    app.start()
    return app, nginx, url


@dataclass(frozen=True)
class Event:
    """One line a worker wrote to shared/events."""

    at: float
    what: str  # started, signal TERM, task_finished, stopped
    index: int
    release: str
    pid: int


def read_events(path: Path) -> list[Event]:
    found = []
    for line in path.read_text().splitlines() if path.exists() else []:
        stamp, *what, _process, index, release, pid = line.split()
        found.append(Event(float(stamp), " ".join(what), int(index), release, int(pid)))
    return found


def workers(ps: dict[str, Any]) -> dict[int, tuple[str, int]]:
    """index -> (release, pid) of the worker instances `relman --json ps` lists."""
    return {i["index"]: (i["release"], i["pid"])
            for i in ps["instances"] if i["process"] == "worker"}


@dataclass(frozen=True)
class Handover:
    """What the events file says happened to the worker during one swap."""

    label: str
    before: dict[int, tuple[str, int]]  # `relman ps` before the swap
    after: dict[int, tuple[str, int]]  # and after it
    stopped: dict[int, float]  # old pid -> its time from SIGTERM to exit
    started: list[int]  # new pids
    gap: float  # last old worker stopped -> first new worker started (stop-first: > 0)

    def ok(self) -> bool:
        old = {pid for _release, pid in self.before.values()}
        new = {pid for _release, pid in self.after.values()}
        releases = {release for release, _pid in self.after.values()}
        return (set(self.stopped) == old and set(self.started) == new and not old & new
                and len(new) == WORKERS and len(releases) == 1 and self.gap >= 0)


def handover(label: str, events: list[Event], since: float, before: dict[str, Any],
             after: dict[str, Any]) -> Handover:
    old_pids = {pid for _release, pid in workers(before).values()}
    new_pids = {pid for _release, pid in workers(after).values()}
    mine = [e for e in events if e.at >= since]
    signalled = {e.pid: e.at for e in mine if e.what.startswith("signal") and e.pid in old_pids}
    stopped = {e.pid: e.at - signalled.get(e.pid, e.at) for e in mine
               if e.what == "stopped" and e.pid in old_pids}
    last_stop = max((e.at for e in mine if e.what == "stopped" and e.pid in old_pids),
                    default=since)
    starts = [e for e in mine if e.what == "started" and e.pid in new_pids]
    first_start = min((e.at for e in starts), default=last_stop)
    return Handover(label, workers(before), workers(after), stopped,
                    [e.pid for e in starts], first_start - last_stop)


def show_handover(h: Handover, version: dict[str, str]) -> None:
    def named(found: dict[int, tuple[str, int]]) -> str:
        releases = sorted({version.get(r, r) for r, _pid in found.values()})
        pids = ", ".join(f"#{i} pid {pid}" for i, (_r, pid) in sorted(found.items()))
        return f"{'+'.join(releases) or '-'} {pids}"

    label = f"worker handover in {h.label} (stop-first)"
    print(f"  {label:<44}{'ok' if h.ok() else 'NOT AS EXPECTED':>6}")
    took = ", ".join(f"{t:.2f}" for _pid, t in sorted(h.stopped.items()))
    print(f"    old: {named(h.before)}: SIGTERM, task finished, exited in {took} s")
    print(f"    new: {named(h.after)}: started {h.gap * 1000:.0f} ms after the last old one "
          "exited")


def summarise(times: tuple[float, float, float], loads: tuple[LoadResult, LoadResult],
              handovers: tuple[Handover, Handover], version: dict[str, str]) -> int:
    first, second, back = times
    sent = sum(load.sent for load in loads)
    failed = sum(load.failed for load in loads)
    p99_ms = max(load.percentile(0.99) for load in loads) * 1000
    say("Summary")
    print(f"  deploy v1 (cold: mirror clone, venv build)  {first:6.2f} s")
    print(f"  deploy v2 (venv reused) under load          {second:6.2f} s")
    print(f"  rollback to v1 under load                   {back:6.2f} s")
    print(f"  requests sent during the swaps              {sent:6d}")
    print(f"  requests failed                             {failed:6d}")
    print(f"  p99 latency during the swaps                {p99_ms:6.0f} ms")
    for h in handovers:
        show_handover(h, version)
    if failed:
        print(f"  failures: {[error for load in loads for error in load.errors]}")
    return 1 if failed or not all(h.ok() for h in handovers) else 0


def swap_with_worker(app: RelmanDaemon, url: str, label: str, events: Path, *args: str
                     ) -> tuple[float, LoadResult, Handover]:
    """A swap under load, with `relman ps` before and after it."""
    before = app.json("ps")
    since = time.time()
    elapsed, load = swap_under_load(app, url, *args)
    after = app.json("ps")
    run(app, "ps")
    return elapsed, load, handover(label, read_events(events), since, before, after)


def main() -> None:
    os.environ.setdefault("UV_CACHE_DIR", os.path.expanduser("~/.cache/relman-tests-uv"))
    base = make_base_dir("relman-demo-")
    nginx: PrivateNginx | None = None
    app: RelmanDaemon | None = None
    status = 1
    try:
        say(f"A sample app in a local git repo ({base}/repo), tagged v1")
        repo = make_app_repo(base / "repo", extra={"WORKER_STOP_DELAY": f"{STOP_DELAY}"})
        app, nginx, url = start_stack(base, repo)
        events = base / "demo" / "shared" / "events"
        say(f"Deploy v1: the web server and {WORKERS} worker instances")
        first = run(app, "deploy", "v1")
        run(app, "ps")
        version = {app.json("ps")["release"]: "v1"}
        release_version(repo, "v2")
        say("Deploy v2 while 16 clients send requests; the worker is handed over after "
            "the switch")
        second, load_v2, to_v2 = swap_with_worker(app, url, "deploy v2", events,
                                                  "deploy", "v2")
        version[app.json("ps")["release"]] = "v2"
        say("Roll back to v1 under the same load; the worker goes back too")
        back, load_rb, to_v1 = swap_with_worker(app, url, "rollback", events, "rollback")
        say("relman releases")
        print(app.relman("releases").stdout)
        status = summarise((first, second, back), (load_v2, load_rb), (to_v2, to_v1),
                           version)
    finally:
        tear_down(app, nginx, base)
    raise SystemExit(status)


if __name__ == "__main__":
    main()

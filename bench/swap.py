"""Swaps under load: failed requests, latency during swaps against steady state, and the time
from `relman rollback` to the switch, cold and with swap.keep_warm.

    .venv/bin/python bench/swap.py [--kind gunicorn|uwsgi] [--swaps 10] [--rollbacks 5]

Everything runs on loopback in a temp dir: the sample app in a local git repo, a real relman
daemon, and (when nginx is installed) a private nginx that the load goes through, as in
production. Figures are ratios within this one run: the machine is noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from testing.daemon import RELMAN, RelmanDaemon, make_base_dir, write_config
from testing.git import make_app_repo, release_version
from testing.load import Load, LoadResult
from testing.nginx import PrivateNginx, nginx_binary
from testing.stack import nginx_user_and_group, start_nginx, tear_down
from testing.waiting import wait_until

SERVERS = {
    "gunicorn": ({"kind": "gunicorn", "app": "app:server", "workers": 4}, "http"),
    "uwsgi": ({"kind": "uwsgi", "wsgi_file": "wsgi.py", "protocol": "uwsgi", "workers": 4},
              "uwsgi"),
}
PATHS = ("/slow?ms=50", "/", "/")


@dataclass
class Rollback:
    to_switch: float  # seconds from starting the CLI to the "switched" line reaching it
    daemon_ms: float  # the daemon's own work from the job's start to its switch
    total: float  # the whole command, drain and stop (or keep warm) of the old one included
    warm: bool


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def latencies(result: LoadResult, windows: list[tuple[float, float]]) -> list[float]:
    """Latencies of the requests that started inside any of *windows*."""
    return [d for t, d in result.latencies if any(a <= t <= b for a, b in windows)]


def timed_rollback(app: RelmanDaemon) -> Rollback:
    """`relman --json rollback`, timestamping the streamed "switched" progress line."""
    started = time.monotonic()
    proc = subprocess.Popen([*RELMAN, "--config", str(app.config), "--json", "rollback"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=app.env)
    assert proc.stdout is not None
    switched, warm, result = 0.0, False, {}
    for line in proc.stdout:
        event = json.loads(line)
        if event.get("step") == "switched" and not switched:
            switched = time.monotonic() - started
        warm = warm or "still warm" in event.get("message", "")
        result = event
    total = time.monotonic() - started
    if proc.wait(60) != 0:
        raise SystemExit(f"relman rollback failed: {proc.stderr.read() if proc.stderr else ''}")
    return Rollback(switched, float(result["switch_ms"]), total, warm)


def rollbacks(app: RelmanDaemon, n: int) -> list[Rollback]:
    """*n* times: deploy v2 (untimed), then time the rollback to v1."""
    found = []
    for _ in range(n):
        app.relman("deploy", "v2", check=True)
        found.append(timed_rollback(app))
    return found


def set_keep_warm(app: RelmanDaemon, seconds: float) -> None:
    """Edit the config and let the daemon's file watch reload it."""
    before = app.log_tail(100_000).count("config.reloaded")
    text = app.config.read_text().replace("keep_warm = 0", f"keep_warm = {seconds}")
    app.config.write_text(text)
    wait_until(lambda: app.log_tail(100_000).count("config.reloaded") > before, timeout=20,
               what="the config reload")


def swaps_under_load(app: RelmanDaemon, url: str, args: argparse.Namespace
                     ) -> tuple[LoadResult, list[tuple[float, float]], tuple[float, float]]:
    with Load(url, PATHS, concurrency=args.concurrency, max_seconds=600) as load:
        time.sleep(1.0)  # warm-up, not counted
        steady = (time.monotonic(), time.monotonic() + args.steady_seconds)
        time.sleep(args.steady_seconds)
        windows = []
        for i in range(args.swaps):
            began = time.monotonic()
            app.relman(*(("rollback",) if i % 2 == 0 else ("deploy", "v2")), check=True)
            windows.append((began, time.monotonic()))
            time.sleep(0.3)
        time.sleep(0.5)
    return load.result, windows, steady


def start(base: Path, kind: str) -> tuple[RelmanDaemon, PrivateNginx | None, str]:
    repo = make_app_repo(base / "repo")
    release_version(repo, "v2")
    server, protocol = SERVERS[kind]
    _user, group = nginx_user_and_group()
    health: dict[str, object] = {"path": "/health", "timeout": 30}
    nginx = None
    url = f"unix:{base}/bench/run/app.sock"
    if nginx_binary():
        nginx = start_nginx(base, name="bench", root=base / "bench", protocol=protocol)
        health["nginx_url"] = f"{nginx.url}/health"
        url = nginx.url
    config = write_config(base / "relman.toml", name="bench", repo=repo, root=base / "bench",
                          server={**server, "socket_group": group}, health=health,
                          swap={"drain_timeout": 30, "stop_timeout": 30, "keep_warm": 0})
    app = RelmanDaemon(config)
    app.init()
    app.start()
    app.relman("deploy", "v1", check=True)
    app.relman("deploy", "v2", check=True)
    return app, nginx, url


def report_load(result: LoadResult, windows: list[tuple[float, float]],
                steady: tuple[float, float], kind: str, via: str) -> bool:
    during, calm = latencies(result, windows), latencies(result, [steady])
    p50_s, p99_s = percentile(calm, 0.5) * 1000, percentile(calm, 0.99) * 1000
    p50_w, p99_w = percentile(during, 0.5) * 1000, percentile(during, 0.99) * 1000
    swap_s = [b - a for a, b in windows]
    print(f"\n{len(windows)} swaps (rollback / deploy alternating), {kind}, load {via}")
    print(f"  requests sent               {result.sent:8d}")
    print(f"  requests failed             {result.failed:8d}   {result.errors[:3]}")
    print(f"  swap wall time, median      {statistics.median(swap_s):8.2f} s")
    print(f"  latency p50 steady / swaps  {p50_s:8.1f} / {p50_w:.1f} ms "
          f"({p50_w / p50_s:.2f}x)")
    print(f"  latency p99 steady / swaps  {p99_s:8.1f} / {p99_w:.1f} ms "
          f"({p99_w / p99_s:.2f}x)")
    return result.failed == 0 and p99_w <= 1.5 * p99_s


def report_rollbacks(cold: list[Rollback], warm: list[Rollback]) -> bool:
    print(f"\nrollback to the switch, median of {len(cold)} (CLI start to the streamed "
          "'switched' line; daemon = its own work from job start to the switch)")
    print("                              CLI->switch   daemon work   whole command")
    for name, runs in (("cold (keep_warm = 0)", cold), ("warm (keep_warm = 120)", warm)):
        print(f"  {name:26s} {statistics.median(r.to_switch for r in runs) * 1000:9.0f} ms"
              f" {statistics.median(r.daemon_ms for r in runs):10.1f} ms"
              f" {statistics.median(r.total for r in runs) * 1000:12.0f} ms")
    cold_ms = statistics.median(r.daemon_ms for r in cold)
    warm_ms = statistics.median(r.daemon_ms for r in warm)
    print(f"  warm / cold daemon work    {warm_ms / cold_ms:9.3f}x")
    if not all(r.warm for r in warm) or any(r.warm for r in cold):
        raise SystemExit("a rollback did not take the path it was meant to measure")
    return warm_ms < 100


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kind", choices=sorted(SERVERS), default="gunicorn")
    parser.add_argument("--swaps", type=int, default=10)
    parser.add_argument("--rollbacks", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--steady-seconds", type=float, default=8.0)
    args = parser.parse_args()
    os.environ.setdefault("UV_CACHE_DIR", os.path.expanduser("~/.cache/relman-tests-uv"))
    base = make_base_dir("relman-bench-")
    app: RelmanDaemon | None = None
    nginx: PrivateNginx | None = None
    met = False
    try:
        app, nginx, url = start(base, args.kind)
        via = "through a private nginx" if nginx else "straight to run/app.sock (no nginx)"
        load_ok = report_load(*swaps_under_load(app, url, args), args.kind, via)
        cold = rollbacks(app, args.rollbacks)
        set_keep_warm(app, 120)
        warm = rollbacks(app, args.rollbacks)
        rollback_ok = report_rollbacks(cold, warm)
        print("\ngoals: 0 failed and p99 during swaps within 1.5x steady: "
              f"{'met' if load_ok else 'MISSED'}; warm rollback under 100 ms of daemon work: "
              f"{'met' if rollback_ok else 'MISSED'}")
        met = load_ok and rollback_ok
    finally:
        tear_down(app, nginx, base)
    raise SystemExit(0 if met else 1)


if __name__ == "__main__":
    main()

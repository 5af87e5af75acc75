"""`make demo`: a sample app in a local git repo, deployed, swapped under traffic, rolled back.

Everything happens in a temp dir on loopback and is removed at the end. With nginx
installed, traffic goes through a private nginx on a free port, as in production.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from testing.daemon import RelmanDaemon, make_base_dir, write_config
from testing.git import make_app_repo, release_version
from testing.load import Load, LoadResult
from testing.nginx import PrivateNginx, nginx_binary
from testing.stack import nginx_user_and_group, start_nginx, tear_down

BOLD, DIM, RESET = ("\033[1m", "\033[2m", "\033[0m") if sys.stdout.isatty() else ("", "", "")


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
                          health=health, swap={"drain_timeout": 10, "stop_timeout": 10})
    print(f"  config: {config}")
    app = RelmanDaemon(config)
    say("relman init, then the daemon")
    app.init()
    app.start()
    return app, nginx, url


def summarise(times: tuple[float, float, float], loads: tuple[LoadResult, LoadResult]) -> int:
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
    if failed:
        print(f"  failures: {[error for load in loads for error in load.errors]}")
        return 1
    return 0


def main() -> None:
    os.environ.setdefault("UV_CACHE_DIR", os.path.expanduser("~/.cache/relman-tests-uv"))
    base = make_base_dir("relman-demo-")
    nginx: PrivateNginx | None = None
    app: RelmanDaemon | None = None
    try:
        say(f"A sample app in a local git repo ({base}/repo), tagged v1")
        repo = make_app_repo(base / "repo")
        app, nginx, url = start_stack(base, repo)
        say("Deploy v1")
        first = run(app, "deploy", "v1")
        release_version(repo, "v2")
        say("Deploy v2 while 16 clients send requests")
        second, load_v2 = swap_under_load(app, url, "deploy", "v2")
        say("Roll back to v1 under the same load")
        back, load_rb = swap_under_load(app, url, "rollback")
        say("relman releases")
        print(app.relman("releases").stdout)
        status = summarise((first, second, back), (load_v2, load_rb))
    finally:
        tear_down(app, nginx, base)
    raise SystemExit(status)


if __name__ == "__main__":
    main()

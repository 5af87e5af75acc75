"""Cost as the work grows (issue 11, point 8): each figure next to its baseline, both
measured in this run.

    .venv/bin/python bench/scale.py [--releases 500] [--files 50000] [--megabytes 300]
                                    [--apps 10] [--idle-seconds 30] [--calls 7]
                                    [--only registry,repo,apps]

1. registry: `relman releases` and `relman status` wall time (median of --calls) of an
   app with 5 releases and one with --releases, their calls interleaved. Each has five real
   deploys of the sample app; the rest are manifests written into state/releases/ as copies
   of the last real one with distinct ids (built, known-good, older commit times and
   last_live, no release tree): deploying 500 times would take the bench's whole budget,
   and both commands read manifests only. keep_releases is above --releases, so every one
   is kept, as a long-lived app keeps them. Also, in this process: what status spends on
   reading the manifests (for the rollback target) without and with the daemon's cache.
2. repo: a git repository of --files files and --megabytes MB of random (incompressible)
   bytes in a nested tree, plus the sample app, made with `git fast-import`. Cold deploy
   (v1), then two same-dependency redeploys of commits that change one file (v2, v3), and
   the disk each extra release takes (st_blocks of the inodes its tree does not share with
   the releases before it), against the sample app alone; each with build.link_unchanged
   false (every file written by git archive, as before) and true (unchanged files
   hard-linked from the live release).
3. apps: --apps daemons, each with the sample app deployed (gunicorn, 2 workers), idle
   (no requests, no CLI calls, after the verification window): CPU and RSS summed over the
   daemons, and over the daemons and their app servers, against one app alone.

Everything runs in a temp dir under /tmp, removed at the end. Exit 1 when a goal is
missed: a redeploy with linking that is not at least 5x cheaper than without it in time or
disk, or a registry command that is more than 3x slower with --releases than with 5.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from relman.client import request
from relman.releases.ids import make_release_id
from relman.releases.layout import AppRoot
from relman.releases.registry import ManifestCache, load_all
from relman.results import Status
from testing.daemon import RelmanDaemon, make_base_dir, write_config
from testing.git import BASE_TIME, SAMPLE, make_app_repo, release_version
from testing.leftovers import kill_leftover_servers

MIB = 2**20
VERIFY_WINDOW = 3.0  # short: the idle figures are taken after it (no live checks)
SERVER = {"kind": "gunicorn", "app": "app:server", "workers": 2}
HEALTH = {"path": "/health", "timeout": 60}


def log_step(text: str) -> None:
    print(f"  .. {text}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def daemons(base: Path) -> Iterator[Callable[..., RelmanDaemon]]:
    """make(name, repo, **tables): an initialised, started daemon; all stopped at the end."""
    made: list[RelmanDaemon] = []

    def make(name: str, repo: Path, **tables: dict[str, Any]) -> RelmanDaemon:
        tables.setdefault("server", SERVER)
        tables.setdefault("health", HEALTH)
        swap = {"verify_window": VERIFY_WINDOW, "drain_timeout": 10, "stop_timeout": 10}
        tables["swap"] = {**swap, **tables.get("swap", {})}
        config = write_config(base / f"{name}.toml", name=name, repo=repo, root=base / name,
                              **tables)
        app = RelmanDaemon(config)
        app.init()
        made.append(app)
        return app.start()

    try:
        yield make
    finally:
        for app in made:
            with contextlib.suppress(Exception):
                app.stop()
            kill_leftover_servers(Path(app.config.with_suffix("")))


def wall(argv_call: Callable[[], object], n: int) -> float:
    """Median wall time of *n* calls."""
    times = []
    for _ in range(n):
        started = time.monotonic()
        argv_call()
        times.append(time.monotonic() - started)
    return statistics.median(times)


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b > 0 else "n/a"


# --- 1. the registry ------------------------------------------------------------------------

def status_answer(app: RelmanDaemon) -> None:
    """One `status` request on the control socket from this process: the daemon's own
    time, without the CLI's start."""
    sock = app.config.with_suffix("") / "run" / "relman.ctl"
    request(sock, "status", {}, {"user": "bench", "ssh": "", "pid": os.getpid()},
            into=Status)


def registry_latency(apps: list[RelmanDaemon], calls: int) -> list[list[float]]:
    """Per app: `relman releases`, `relman status` (median CLI wall time, human output) and
    the daemon's status answer; the apps' calls interleaved so that a change in the
    machine's load hits all alike."""
    cases: list[Callable[[RelmanDaemon], object]] = [
        lambda app: app.relman("releases", check=True),
        lambda app: app.relman("status", check=True), status_answer]
    times: list[list[list[float]]] = [[[] for _ in cases] for _ in apps]
    for _ in range(calls):
        for app, found in zip(apps, times, strict=True):
            for case, out in zip(cases, found, strict=True):
                started = time.monotonic()
                case(app)
                out.append(time.monotonic() - started)
    return [[statistics.median(t) for t in found] for found in times]


def manifest_reading(root: Path, calls: int) -> tuple[float, float]:
    """What status spends on the manifests (the rollback target), in this process: every
    manifest read and parsed (before), against the daemon's cache (after); seconds."""
    app_root = AppRoot(root)
    cache: ManifestCache = {}
    load_all(app_root, cache)
    return (wall(lambda: load_all(app_root), calls),
            wall(lambda: load_all(app_root, cache), calls))


def add_manifests(root: Path, count: int) -> None:
    """*count* more manifests, copies of the newest real one with distinct, older ids."""
    manifests = root / "state" / "releases"
    newest = max(manifests.glob("*.json"))
    data = json.loads(newest.read_text())
    rng = random.Random(8)
    for n in range(count):
        sha = f"{rng.getrandbits(160):040x}"
        when = BASE_TIME - 86400 - 60 * n
        rid = make_release_id(when, sha)
        copy = {**data, "id": rid, "sha": sha, "ref": f"bench-{n}", "created": when,
                "known_good": True, "last_live": float(when), "state": "built"}
        (manifests / f"{rid}.json").write_text(json.dumps(copy))


def bench_registry(make: Callable[..., RelmanDaemon], base: Path, args: argparse.Namespace
                   ) -> bool:
    apps = []
    for name in ("few", "many"):
        repo = make_app_repo(base / f"{name}-repo")
        app = make(name, repo, app={"keep_releases": args.releases + 10})
        for n in range(1, 6):
            if n > 1:
                release_version(repo, f"v{n}")
            app.relman("deploy", f"v{n}", check=True)
        apps.append(app)
    add_manifests(base / "many", args.releases - 5)
    count = len(apps[1].json("releases"))
    log_step(f"registry: 5 and {count} releases; measuring")
    few, many = registry_latency(apps, args.calls)
    before, after = manifest_reading(base / "many", args.calls)
    print(f"\n1. registry: wall time, median of {args.calls} calls, the two apps' calls "
          "interleaved")
    print(f"   {'':34} {'5 releases':>11} {f'{count} releases':>14} {'ratio':>7}")
    names = ("relman releases (CLI)", "relman status (CLI)",
             "status answer (control socket)")
    for name, a, b in zip(names, few, many, strict=True):
        print(f"   {name:34} {a * 1000:8.1f} ms {b * 1000:11.1f} ms {ratio(b, a):>7}")
    print(f"   status's manifest reading with {count} releases (the rollback target): "
          f"{before * 1000:.1f} ms reading every file, {after * 1000:.1f} ms with the "
          f"daemon's cache ({ratio(after, before)})")
    return all(b < 3 * a for a, b in zip(few, many, strict=True))


# --- 2. the big repository --------------------------------------------------------------------

def fast_import_stream(out: Any, files: int, megabytes: float, seed: int = 11) -> None:
    """A fast-import stream: v1 = the sample app + *files* random files (nested tree),
    v2 and v3 = one file (VERSION) changed each, all tagged."""
    rng = random.Random(seed)
    mean = megabytes * 1e6 / max(files, 1)
    who = "relman bench <bench@relman.invalid>"

    def data(blob: bytes) -> None:
        out.write(b"data %d\n" % len(blob) + blob + b"\n")

    for number, version in enumerate(("v1", "v2", "v3")):
        when = BASE_TIME + 60 * number
        out.write(f"commit refs/heads/main\nmark :{number + 1}\n"
                  f"author {who} {when} +0000\ncommitter {who} {when} +0000\n".encode())
        data(version.encode())
        if number == 0:
            for path in sorted(SAMPLE.iterdir()):
                if path.is_file():
                    out.write(f"M 100644 inline {path.name}\n".encode())
                    data(path.read_bytes())
            for i in range(files):
                size = int(rng.uniform(0.2, 1.8) * mean)
                out.write(f"M 100644 inline data/d{i // 2500:02d}/e{i // 100 % 25:02d}/"
                          f"f{i:05d}.bin\n".encode())
                data(rng.randbytes(size))
        out.write(b"M 100644 inline VERSION\n")
        data(f"{version}\n".encode())
        out.write(f"reset refs/tags/{version}\nfrom :{number + 1}\n\n".encode())


def make_big_repo(path: Path, files: int, megabytes: float) -> Path:
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(path)], check=True)
    proc = subprocess.Popen(["git", "fast-import", "--quiet"], cwd=path, stdin=subprocess.PIPE)
    assert proc.stdin is not None
    fast_import_stream(proc.stdin, files, megabytes)
    proc.stdin.close()
    if proc.wait() != 0:
        raise SystemExit("git fast-import failed")
    return path


def sample_repo(path: Path) -> Path:
    repo = make_app_repo(path)
    release_version(repo, "v2")
    release_version(repo, "v3")
    return repo


def disk_used(dirs: list[Path], seen: set[tuple[int, int]]) -> int:
    """Bytes (st_blocks) of the inodes under *dirs* not in *seen*, which gets them: a hard
    link counts once, as `du` over several directories counts it."""
    total = 0
    for top in dirs:
        for dirpath, dirnames, filenames in os.walk(top):
            for name in [*dirnames, *filenames]:
                st = os.lstat(os.path.join(dirpath, name))
                if (st.st_dev, st.st_ino) not in seen:
                    seen.add((st.st_dev, st.st_ino))
                    total += st.st_blocks * 512
    return total


@dataclass
class DeployFigures:
    cold: float
    redeploys: list[float]
    cold_disk: int
    extra_disk: list[int]
    exports: list[float]  # the export step of each redeploy (manifest timings)


def timed_deploy(app: RelmanDaemon, ref: str) -> float:
    started = time.monotonic()
    app.relman("deploy", ref, check=True, timeout=900)
    return time.monotonic() - started


def deploy_series(make: Callable[..., RelmanDaemon], name: str, repo: Path, link: bool
                  ) -> DeployFigures:
    app = make(name, repo, build={"link_unchanged": link}, app={"keep_releases": 10})
    root = app.config.with_suffix("")
    cold = timed_deploy(app, "v1")
    redeploys = [timed_deploy(app, ref) for ref in ("v2", "v3")]
    rows = app.json("releases")
    seen: set[tuple[int, int]] = set()
    disks = [disk_used([root / "releases" / r["id"]], seen) for r in rows]
    exports = [float(r["timings"].get("export", 0.0)) for r in rows[1:]]
    return DeployFigures(cold, redeploys, disks[0], disks[1:], exports)


def bench_repo(make: Callable[..., RelmanDaemon], base: Path, args: argparse.Namespace) -> bool:
    started = time.monotonic()
    big = make_big_repo(base / "big.git", args.files, args.megabytes)
    log_step(f"repo: {args.files} files, {args.megabytes:.0f} MB made in "
             f"{time.monotonic() - started:.1f} s")
    small = sample_repo(base / "sample-repo")
    cases = {}
    for label, repo, link in (("sample app, link_unchanged = false", small, False),
                              ("sample app, link_unchanged = true", small, True),
                              ("big repo, link_unchanged = false", big, False),
                              ("big repo, link_unchanged = true", big, True)):
        log_step(f"repo: {label}")
        name = label.replace(",", "").replace(" = ", "-").replace(" ", "-")
        cases[label] = deploy_series(make, name, repo, link)
    print(f"\n2. a repository of {args.files} files, {args.megabytes:.0f} MB (+ the sample "
          "app), against the sample app alone; redeploys change one file (VERSION)")
    print(f"   {'case':38} {'cold':>7} {'redeploy':>9} {'export':>8} {'cold disk':>10} "
          f"{'disk/extra release':>19}")
    for label, f in cases.items():
        print(f"   {label:38} {f.cold:6.2f}s {statistics.median(f.redeploys):8.2f}s "
              f"{statistics.median(f.exports):7.3f}s {f.cold_disk / MIB:7.2f} MiB "
              f"{statistics.median(f.extra_disk) / MIB:15.2f} MiB")
    before, after = cases["big repo, link_unchanged = false"], \
        cases["big repo, link_unchanged = true"]
    sample = cases["sample app, link_unchanged = true"]
    t_before, t_after = statistics.median(before.redeploys), statistics.median(after.redeploys)
    d_before, d_after = statistics.median(before.extra_disk), statistics.median(after.extra_disk)
    print("   ratios (big repo):")
    print(f"   redeploy, linking / not linking        {ratio(t_after, t_before)}")
    print(f"   disk per extra release, linking / not  {ratio(d_after, d_before)}")
    print(f"   redeploy with linking / sample app's   "
          f"{ratio(t_after, statistics.median(sample.redeploys))}")
    print(f"   cold deploy / sample app's cold        {ratio(after.cold, sample.cold)}")
    return t_after * 5 < t_before or d_after * 5 < d_before


# --- 3. idle apps -----------------------------------------------------------------------------

def processes_of(app: RelmanDaemon) -> tuple[psutil.Process, list[psutil.Process]]:
    """The daemon, and its descendants (app servers and their workers)."""
    assert app.proc is not None
    daemon = psutil.Process(app.proc.pid)
    return daemon, daemon.children(recursive=True)


def idle_figures(apps: list[RelmanDaemon], seconds: float) -> dict[str, tuple[float, float]]:
    """{"daemons": (CPU % of one core, RSS MiB), "daemons + servers": (...)} over *seconds*."""
    groups: dict[str, list[psutil.Process]] = {"daemons": [], "daemons + servers": []}
    for app in apps:
        daemon, children = processes_of(app)
        groups["daemons"].append(daemon)
        groups["daemons + servers"] += [daemon, *children]

    def cpu(procs: list[psutil.Process]) -> float:
        return sum(sum(p.cpu_times()[:2]) for p in procs)

    before = {name: cpu(procs) for name, procs in groups.items()}
    rss: dict[str, list[int]] = {name: [] for name in groups}
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        for name, procs in groups.items():
            rss[name].append(sum(p.memory_info().rss for p in procs))
        time.sleep(1)
    elapsed = time.monotonic() - started
    return {name: (100 * (cpu(procs) - before[name]) / elapsed,
                   statistics.mean(rss[name]) / MIB) for name, procs in groups.items()}


def bench_apps(make: Callable[..., RelmanDaemon], base: Path, args: argparse.Namespace) -> bool:
    repo = make_app_repo(base / "apps-repo")
    apps = []
    figures = {}
    for n in range(1, args.apps + 1):
        app = make(f"app{n:02d}", repo)
        app.relman("deploy", "v1", check=True)
        apps.append(app)
        if n in (1, args.apps):
            time.sleep(VERIFY_WINDOW + 1)
            log_step(f"apps: {n} deployed; idle for {args.idle_seconds:.0f} s")
            figures[n] = idle_figures(apps, args.idle_seconds)
    print(f"\n3. idle apps over {args.idle_seconds:.0f} s each, gunicorn with 2 workers each, "
          "no requests, no CLI calls, after the verification window")
    print(f"   {'':20} {'CPU % of 1 core':>16} {'RSS MiB':>9}   {args.apps} apps / 1 app")
    for group in ("daemons", "daemons + servers"):
        for n, found in figures.items():
            cpu, rss = found[group]
            print(f"   {n:2d} app(s), {group:17} {cpu:8.3f} {rss:9.1f}")
        (cpu1, rss1), (cpun, rssn) = figures[1][group], figures[args.apps][group]
        print(f"   {'':20} ratio: CPU {ratio(cpun, cpu1)}, RSS {ratio(rssn, rss1)}")
    return True


# --- main -----------------------------------------------------------------------------------

def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--releases", type=int, default=500)
    parser.add_argument("--files", type=int, default=50_000)
    parser.add_argument("--megabytes", type=float, default=300.0)
    parser.add_argument("--apps", type=int, default=10)
    parser.add_argument("--idle-seconds", type=float, default=30.0)
    parser.add_argument("--calls", type=int, default=7, help="CLI calls per latency figure")
    parser.add_argument("--only", default="registry,repo,apps",
                        help="comma-separated parts to run: registry, repo, apps")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    os.environ.setdefault("UV_CACHE_DIR", os.path.expanduser("~/.cache/relman-tests-uv"))
    os.environ.setdefault("UV_PYTHON_DOWNLOADS", "never")
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"relman scale bench: {os.cpu_count()} cores, load average {load}", flush=True)
    parts = {"registry": bench_registry, "repo": bench_repo, "apps": bench_apps}
    base = make_base_dir("relman-bench-scale-")
    met = True
    try:
        for name in args.only.split(","):
            with daemons(base) as make:
                met = parts[name.strip()](make, base, args) and met
            sys.stdout.flush()
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(f"\ngoals: {'met' if met else 'MISSED'}")
    raise SystemExit(0 if met else 1)


if __name__ == "__main__":
    main()

"""Deploy speed: the manual way against relman's cold deploy, a redeploy with unchanged
dependencies and a deploy with one added dependency (issue 6).

    .venv/bin/python bench/deploy_speed.py [--runs N] [--verbose]

The manual way is what users do by hand today: `git clone` at the tag, `python3 -m venv`,
`pip install -r requirements.txt`, start gunicorn on a unix socket and wait for GET /health
to answer 200. relman's cases are the wall time of `relman deploy REF` against a real daemon
with a fresh app root. Everything runs on loopback in a temp dir that is removed at the end.
Goal: the unchanged-dependency redeploy under 0.15x the manual way and under 5 s plus the
app's boot time (the time its health gate took).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from testing.daemon import RELMAN, RelmanDaemon, make_base_dir, service_path, write_config
from testing.git import make_app_repo, release_version
from testing.unixhttp import http_get
from testing.waiting import wait_until

WORKERS = 2
DEPS: list[str] = []  # --deps: extra requirements for every case
ADDED_DEP = "six==1.16.0"
CASES = (
    ("manual", "manual: clone + venv + pip install + start"),
    ("cold", "relman deploy v1 (cold: fresh root)"),
    ("redeploy", "relman deploy v2 (same dependencies)"),
    ("added_dep", f"relman deploy v3 (+ {ADDED_DEP})"),
)
# Lines of a deploy's output that mean dependency work (uv or pip talking, or a venv build).
DEP_WORK = re.compile(r"building virtualenv|built with|Resolved|Prepared|Installed|Installing|"
                      r"Downloading|Collecting|Uninstalled|Audited|^ *[+-] ")


@dataclass
class Measured:
    seconds: float
    boot: float  # the app's boot: server start to the first 200 from GET /health
    lines: list[str] = field(default_factory=list)  # what the command printed
    phases: dict[str, float] = field(default_factory=dict)


def log_step(text: str) -> None:
    print(f"  .. {text}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- manual way


def get_status(sock: Path, path: str = "/health") -> int:
    """GET *path* over a unix socket; the status code, 0 if nothing answers."""
    try:
        return http_get(sock, path, timeout=5)[0]
    except (OSError, ValueError):
        return 0


def timed(argv: list[str], out: list[str], env: dict[str, str], cwd: Path | None = None
          ) -> float:
    """Run *argv*, append its output to *out*, return its wall time; exit if it fails."""
    started = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, env=env, cwd=cwd)
    elapsed = time.monotonic() - started
    out.extend((proc.stdout + proc.stderr).splitlines())
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {proc.returncode}:\n" + "\n".join(out[-30:]))
    return elapsed


def start_and_wait(app_dir: Path, venv: Path, sock: Path, log: Path) -> float:
    """Start gunicorn as relman would, wait for /health 200, stop it; the boot time."""
    argv = [str(venv / "bin" / "gunicorn"), "--bind", f"unix:{sock}", "--workers", str(WORKERS),
            "--chdir", str(app_dir), "app:server"]
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=app_dir,
                                start_new_session=True)
    started = time.monotonic()
    try:
        def healthy() -> bool:
            if proc.poll() is not None:
                raise SystemExit(f"gunicorn exited {proc.returncode}:\n{log.read_text()}")
            return get_status(sock) == 200

        wait_until(healthy, timeout=60, interval=0.02, what="gunicorn to answer /health")
        return time.monotonic() - started
    finally:
        stop_group(proc)


def stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group of *proc* (its own session), SIGKILL it after 30 s."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def manual_way(base: Path, repo: Path, tag: str) -> Measured:
    """Clone, venv, pip install, start: timed phase by phase, then stopped."""
    work = base / "manual"
    work.mkdir()
    app_dir, venv = work / "app", work / "venv"
    out: list[str] = []
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.pop("VIRTUAL_ENV", None)
    env["PATH"] = service_path()  # the `python3` relman's daemon gets (testing/daemon.py)
    phases = {
        "clone": timed(["git", "-c", "advice.detachedHead=false", "clone", "--quiet",
                        "--branch", tag, str(repo), str(app_dir)], out, env=env),
        "venv": timed(["python3", "-m", "venv", str(venv)], out, env=env),
        "pip": timed([str(venv / "bin" / "pip"), "install", "-r", "requirements.txt"], out,
                     env=env, cwd=app_dir),
    }
    boot = start_and_wait(app_dir, venv, work / "app.sock", work / "gunicorn.log")
    phases["start"] = boot
    return Measured(sum(phases.values()), boot, out, phases)


# ---------------------------------------------------------------------------- relman


def timed_deploy(app: RelmanDaemon, ref: str) -> Measured:
    """`relman --json deploy REF`: wall time, and the boot time from the streamed progress
    (the "start" line to the "healthy" line, as they reach the CLI)."""
    started = time.monotonic()
    proc = subprocess.Popen([*RELMAN, "--config", str(app.config), "--json", "deploy", ref],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=app.env)
    assert proc.stdout is not None
    stamps: dict[str, float] = {}
    lines = []
    phases: dict[str, float] = {}
    for raw in proc.stdout:
        try:
            event = json.loads(raw)
        except ValueError:
            lines.append(raw.rstrip())
            continue
        if "switch_ms" in event:  # the result: daemon work from the job's start to the switch
            phases["switch"] = float(event["switch_ms"]) / 1000
        step = str(event.get("step", ""))
        stamps.setdefault(step, time.monotonic())
        lines.append(f"[{step}] {event.get('message', '')}" if step else raw.rstrip())
    code = proc.wait(300)
    elapsed = time.monotonic() - started
    err = proc.stderr.read() if proc.stderr else ""
    if code != 0:
        raise SystemExit(f"relman deploy {ref} exited {code}\n" + "\n".join(lines) +
                         f"\n{err}\n--- daemon log ---\n{app.log_tail()}")
    boot = stamps.get("healthy", 0.0) - stamps.get("start", 0.0)
    return Measured(elapsed, boot, lines, phases)


def start_daemon(base: Path, repo: Path) -> RelmanDaemon:
    config = write_config(base / "relman.toml", name="bench", repo=repo, root=base / "bench",
                          server={"kind": "gunicorn", "app": "app:server", "workers": WORKERS},
                          health={"path": "/health", "timeout": 60},
                          swap={"drain_timeout": 10, "stop_timeout": 10})
    app = RelmanDaemon(config)
    app.init()
    app.start()
    return app


def relman_cases(app: RelmanDaemon, repo: Path, first: str) -> dict[str, Measured]:
    found = {"cold": timed_deploy(app, first)}
    release_version(repo, "v2", extra={"app_change.txt": "an app change, no dependency\n"})
    found["redeploy"] = timed_deploy(app, "v2")
    requirements = (repo / "requirements.txt").read_text()
    release_version(repo, "v3", extra={"requirements.txt": f"{requirements}{ADDED_DEP}\n"})
    found["added_dep"] = timed_deploy(app, "v3")
    return found


def check_releases(app: RelmanDaemon) -> list[str]:
    """Problems in what the deploys left: venv sharing and the added dependency."""
    by_ref = {r["ref"]: r for r in app.json("releases")}
    by_ref["v1"] = by_ref.get("v1", by_ref.get("v1-deps", {}))
    problems = []
    if by_ref["v1"]["venv"] != by_ref["v2"]["venv"]:
        problems.append(f"v2 did not share v1's venv: {by_ref['v1']['venv']} vs "
                        f"{by_ref['v2']['venv']}")
    if by_ref["v3"]["venv"] == by_ref["v2"]["venv"]:
        problems.append("v3 (one added dependency) reused v2's venv")
    name = ADDED_DEP.split("==")[0]
    probe = subprocess.run([f"{by_ref['v3']['venv']}/bin/python", "-c", f"import {name}"],
                           capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        problems.append(f"{name} is not importable in v3's venv: {probe.stderr.strip()}")
    return problems


def add_timings(app: RelmanDaemon, results: dict[str, Measured]) -> None:
    """The daemon's own timings from the manifests (seconds): venv, build, deploy."""
    by_ref = {r["ref"]: r for r in app.json("releases")}
    by_ref["v1"] = by_ref.get("v1", by_ref.get("v1-deps", {}))
    for key, ref in (("cold", "v1"), ("redeploy", "v2"), ("added_dep", "v3")):
        results[key].phases.update(by_ref[ref]["timings"])


# ---------------------------------------------------------------------------- one run


def one_run(number: int, verbose: bool, deps: list[str]
            ) -> tuple[dict[str, Measured], list[str]]:
    base = make_base_dir("relman-deploy-speed-")
    app: RelmanDaemon | None = None
    try:
        repo = make_app_repo(base / "repo")
        if deps:  # v1 becomes the sample app with a real app's dependency list
            requirements = (repo / "requirements.txt").read_text() + "\n".join(deps) + "\n"
            release_version(repo, "v1-deps", extra={"requirements.txt": requirements})
        first = "v1-deps" if deps else "v1"
        log_step(f"run {number}: the manual way")
        results = {"manual": manual_way(base, repo, first)}
        log_step(f"run {number}: relman init, daemon, deploy v1, v2, v3")
        app = start_daemon(base, repo)
        results.update(relman_cases(app, repo, first))
        problems = check_releases(app)
        add_timings(app, results)
    finally:
        if app is not None:
            app.stop()
        shutil.rmtree(base, ignore_errors=True)
    if verbose:
        for key, title in CASES:
            print(f"\n--- run {number}: {title} ---")
            print("\n".join(results[key].lines))
    return results, problems


# ---------------------------------------------------------------------------- report


def dir_summary(path: Path) -> str:
    files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else []
    size = sum(p.stat().st_size for p in files)
    return f"{path} ({len(files)} files, {size / 1e6:.1f} MB)"


def median(runs: list[dict[str, Measured]], key: str, attr: str = "seconds") -> float:
    return statistics.median(float(getattr(r[key], attr)) for r in runs)


def backend(lines: list[str]) -> str:
    for line in lines:
        if match := re.search(r"built with (\w+)|building virtualenv \S+ with (\w+)", line):
            return match.group(1) or match.group(2)
    return "none (venv reused)" if any("reused" in line for line in lines) else "unknown"


def dependency_work(lines: list[str]) -> list[str]:
    return [line for line in lines if line.startswith("[build]")
            and DEP_WORK.search(line.removeprefix("[build] "))]


def print_table(runs: list[dict[str, Measured]]) -> None:
    manual = median(runs, "manual")
    print(f"\ndeploy speed, median of {len(runs)} run(s), gunicorn with {WORKERS} workers, "
          f"requirements: {' '.join(DEPS) or 'the sample app (gunicorn, pyuwsgi)'}\n")
    print(f"  {'case':46s} {'seconds':>8s} {'x manual':>9s} {'boot':>7s}  backend")
    for key, title in CASES:
        seconds = median(runs, key)
        how = "pip (by hand)" if key == "manual" else backend(runs[-1][key].lines)
        print(f"  {title:46s} {seconds:8.2f} {seconds / manual:8.3f}x "
              f"{median(runs, key, 'boot'):6.2f}s  {how}")
    print()
    for key, _title in CASES:
        phases = "  ".join(f"{name} {statistics.median(r[key].phases[name] for r in runs):.2f}"
                           for name in runs[0][key].phases)
        print(f"  {key:9s} phases (s): {phases}")
    print("  (relman: the daemon's manifest timings; switch = job start to the switch)")
    if len(runs) > 1:
        for key, title in CASES:
            each = " ".join(f"{r[key].seconds:.2f}" for r in runs)
            print(f"  each run, {title}: {each}")


def print_goals(runs: list[dict[str, Measured]]) -> bool:
    manual, redeploy = median(runs, "manual"), median(runs, "redeploy")
    boot = median(runs, "redeploy", "boot")
    ratio_ok, abs_ok = redeploy < 0.15 * manual, redeploy < 5 + boot
    print("\ngoals (unchanged-dependency redeploy):")
    print(f"  under 0.15x the manual way: {redeploy:.2f} s vs {0.15 * manual:.2f} s "
          f"({redeploy / manual:.3f}x)  {'PASS' if ratio_ok else 'MISS'}")
    print(f"  under 5 s + boot time:      {redeploy:.2f} s vs {5 + boot:.2f} s "
          f"(boot {boot:.2f} s)  {'PASS' if abs_ok else 'MISS'}")
    return ratio_ok and abs_ok


def print_notes(runs: list[dict[str, Measured]], caches: tuple[str, str],
                problems: list[str]) -> None:
    pip_lines = [line for r in runs for line in r["manual"].lines]
    downloads = sum(1 for line in pip_lines if line.strip().startswith("Downloading"))
    cached = sum(1 for line in pip_lines if line.strip().startswith("Using cached"))
    print("\nnotes:")
    print(f"  pip cache (manual way), before the first run: {caches[0]}; the manual pip "
          f"install downloaded {downloads} and took {cached} from that cache, over all runs")
    print(f"  uv cache (relman, UV_CACHE_DIR), before the first run: {caches[1]}")
    print("  the cold deploy is a fresh app root (mirror clone, new venv) but not a cold uv "
          "cache; from the 2nd run on the added dependency is in the uv cache too")
    print("  seconds are the CLI's wall time: the redeploys include draining and stopping the "
          "old server; boot = server start to the first /health 200")
    for line in sorted({p for r in runs for p in dependency_work(r["redeploy"].lines)}):
        problems.append(f"dependency work in the unchanged-dependency redeploy: {line}")
    for problem in problems:
        print(f"  BUG? {problem}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1, help="repeat and report the median")
    parser.add_argument("--verbose", action="store_true", help="print every command's output")
    parser.add_argument("--deps", default="", metavar="REQS",
                        help="extra requirements for every case, space-separated, e.g. "
                             "'django==5.1.4 requests==2.32.3': a real app's dependency list")
    args = parser.parse_args()
    os.environ.setdefault("UV_CACHE_DIR", os.path.expanduser("~/.cache/relman-tests-uv"))
    pip_cache = Path(os.environ.get("PIP_CACHE_DIR") or os.path.expanduser("~/.cache/pip"))
    caches = (dir_summary(pip_cache), dir_summary(Path(os.environ["UV_CACHE_DIR"])))
    DEPS[:] = args.deps.split()
    runs: list[dict[str, Measured]] = []
    problems: list[str] = []
    for number in range(1, max(1, args.runs) + 1):
        results, found = one_run(number, args.verbose, DEPS)
        runs.append(results)
        problems.extend(f"run {number}: {p}" for p in found)
    print_table(runs)
    met = print_goals(runs)
    print_notes(runs, caches, problems)
    raise SystemExit(0 if met and not problems else 1)


if __name__ == "__main__":
    main()

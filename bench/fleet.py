"""Fleet deploys (issue 10, "Benchmark"): `relman fleet deploy` on 1, 2, 4 and 6 simulated
hosts against one host's own deploy measured in the same run, the mixed-version window of
the together and rolling (batch 1) strategies, and the requests that failed through the
front nginx meanwhile.

    sudo .venv/bin/python bench/fleet.py [--hosts 1,2,4,6] [--repeats 3] [--quick]
                                         [--host-cpu CORES] [--mux] [--lines]

--quick: one run per figure (about 1.5 min at 6 hosts alone, 4 for all sizes). The fleet
runs use [fleet] multiplex (its default: the coordinator opens one master connection per
host for the run). --mux: also the together deploy over master connections started
beforehand, as a user's ControlPersist leaves them (multiplex = false, so that these are
used).
--lines: each fleet run's output lines on stderr, timed as they arrived.

--host-cpu: each simulated host's CPU, in cores (default: what the largest size leaves of
this machine's cores once CLIENT_CPU and COORDINATOR_CPU are set aside, 0.2 on 2 cores
for 6 hosts): its daemon, all it starts and its ssh sessions' relman run in a cgroup of
its own with that CFS quota (testing/cpu_share.py), so that n hosts are n machines of one
size, the single-host baseline's host included. The load threads and the front nginx get
CLIENT_CPU cores in a group of theirs, and the coordinator and the single deploy's ssh run
outside any: neither the load nor the hosts take the coordinator's CPU, as on machines of
their own. 0 lets all share the machine, and then the ratio measures this machine's cores
more than the coordinator (6 hosts' builds on 2 cores take 3 times one's).

Root only: the hosts are unix users made for the run and removed at its end
(testing/fleet.py simulated_fleet(): a daemon per user, one private sshd with a
forced-command key per user, a front nginx round-robin over the hosts' run/app.sock).

For each fleet size, under load through its front nginx (testing/load.py, keep-alive
clients), each repeat commits a new version of the sample app (same requirements: every
venv is reused) before each of:
1. single: `ssh HOST relman deploy vN` on the first host, through its forced command;
2. together: `relman --json --config FLEET.toml fleet deploy vN`, the real CLI ([fleet]
   defaults: strategy together, no canary), every host;
3. rolling: the same with strategy = "rolling", batch = 1 (sizes above 1).
Wall times are medians over the repeats, the three interleaved so that the machine's load
hits all alike. The coordinator's report gives each host's prepare and switch seconds: what
the wall time has beyond the slowest prepare plus the slowest switch is the coordinator's
own (its start, the status round, the release host's gate, ssh sessions); a slowest prepare
that grows with the size while the CPU is busy is contention (6 hosts share 2 cores here).

The mixed-version window, from the first host serving the new release to the last, is
measured three ways:
- nginx (from outside): every answer through the front nginx names its version, and
  X-Upstream its host. A host switched after the start of its last request answered by the
  old version and before the end of its first answered by the new one: its switch is the
  middle of that interval, and the window is the spread of those (the "+-" column: half
  the widest interval).
- link (on the hosts): each host's run/app.sock symlink mtime; the switch creates it and
  os.replace()s it over the old one (relman/atomic.py replace_symlink). One machine, so
  one clock for all hosts.
- lines (through the coordinator): when each host's `switched` progress line, which the
  coordinator streams with --json as the hosts' switches run, reached this script.

Goals (exit 1 when one is missed): fleet deploy at the largest size at most 1.3x the single
deploy, both in wall time and to the release live everywhere (a single deploy drains and
stops its old release before it exits, a fleet's switch keeps it warm: the second compares
like with like); the together window under 1 s (nginx method) at every size; no failed
request.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from testing.cpu_share import ROOT_FIRST
from testing.daemon import RELMAN
from testing.fleet import Fleet, SimulatedFleet, simulated_fleet
from testing.fleet_runs import (
    Answers,
    Run,
    coordinator_env,
    fleet_deploy,
    fleet_toml,
    med,
    mux_options,
    single_deploy,
    ssh_masters,
)
from testing.git import release_version
from testing.load import Load

GOAL_RATIO = 1.3
GOAL_WINDOW = 1.0
CONCURRENCY = 4  # load clients; more would take the 2 cores from the hosts
# --host-cpu: the load threads and the front nginx share CLIENT_CPU cores, and at least
# COORDINATOR_CPU cores stay free for the coordinator (or the single deploy's ssh) and sshd
CLIENT_CPU = 0.3
COORDINATOR_CPU = 0.5


def log_step(text: str) -> None:
    print(f"  .. {text}", file=sys.stderr, flush=True)


# --- one fleet size ---------------------------------------------------------------------------

@dataclass
class Size:
    n: int
    single: list[Run] = field(default_factory=list)
    together: list[Run] = field(default_factory=list)
    rolling: list[Run] = field(default_factory=list)
    mux: list[Run] = field(default_factory=list)  # together, over ssh masters
    cli_start: list[float] = field(default_factory=list)  # `relman --version` here
    ssh_status: list[float] = field(default_factory=list)  # `ssh HOST relman status`
    mux_status: list[float] = field(default_factory=list)  # `relman fleet status`, masters
    sent: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)


class Versions:
    """v2, v3, ...: each a new commit of the sample app with the same requirements."""

    def __init__(self, repo: Path) -> None:
        self.repo, self.number = repo, 1

    def next(self) -> str:
        self.number += 1
        ref = f"v{self.number}"
        release_version(self.repo, ref)
        return ref


def fixed_costs(f: Fleet, size: Size, mux: Path | None, prefix: tuple[str, ...]) -> None:
    """What every coordinator pays before any work: its own start, and per ssh session
    (status, prepare, switch...) the connection and the host's relman CLI start (with
    *mux*, a config whose ssh reuses a master connection: that too)."""
    started = time.monotonic()
    subprocess.run([*prefix, *RELMAN, "--version"], capture_output=True, check=True)
    size.cli_start.append(time.monotonic() - started)
    started = time.monotonic()
    done = subprocess.run([*prefix, *f.ssh_argv(f.hosts[0], "status")], capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, env=coordinator_env(),
                          timeout=180, check=False)
    if done.returncode != 0:
        raise SystemExit(f"ssh {f.hosts[0].name} relman status: {done.stdout}{done.stderr}")
    size.ssh_status.append(time.monotonic() - started)
    if mux is not None:
        started = time.monotonic()
        subprocess.run([*prefix, *RELMAN, "--config", str(mux), "fleet", "status"],
                       env=coordinator_env(), capture_output=True, check=False)
        size.mux_status.append(time.monotonic() - started)


def show(run: Run, lines: bool) -> None:
    if lines:
        for seconds, line in run.timeline:
            print(f"     {seconds:7.3f} {line}", file=sys.stderr)


def bench_size(sim: SimulatedFleet, n: int, versions: Versions, args: argparse.Namespace
               ) -> Size:
    f = sim(n)
    base = sim.base / f"fleet-{n}"
    base.mkdir(exist_ok=True)
    together = fleet_toml(base / "together.toml", f)
    rolling = fleet_toml(base / "rolling.toml", f, strategy="rolling", batch=1)
    options = mux_options(base)
    # multiplex = false: the masters started beforehand (a user's ControlPersist), not the
    # coordinator's own (the default, which the `together` runs use, opened from cold)
    mux = fleet_toml(base / "mux.toml", f, options, multiplex=False) if args.mux else None
    answers = Answers({f"unix:{h.root}/run/app.sock": h.name for h in f.hosts})
    size = Size(n)
    prefix = ROOT_FIRST if sim.cpu is not None else ()
    repeats, lines = args.repeats, args.lines
    with contextlib.ExitStack() as stack:
        if mux is not None:
            stack.enter_context(ssh_masters(f, options))
        load = stack.enter_context(Load(f.url, concurrency=CONCURRENCY, keepalive=True,
                                        max_requests=10**8, max_seconds=3600,
                                        observe=answers.observe))
        for rep in range(repeats):
            log_step(f"{n} host(s), repeat {rep + 1} of {repeats}: single")
            fixed_costs(f, size, mux, prefix)
            size.single.append(single_deploy(f, f.hosts[0], versions.next(), prefix))
            log_step(f"{n} host(s), repeat {rep + 1} of {repeats}: fleet together")
            size.together.append(fleet_deploy(together, f, versions.next(), answers,
                                             prefix))
            show(size.together[-1], lines)
            if n > 1:
                log_step(f"{n} host(s), repeat {rep + 1} of {repeats}: fleet rolling")
                size.rolling.append(fleet_deploy(rolling, f, versions.next(), answers,
                                                prefix))
                show(size.rolling[-1], lines)
            if mux is not None:
                log_step(f"{n} host(s), repeat {rep + 1} of {repeats}: fleet together, "
                         "ssh masters")
                size.mux.append(fleet_deploy(mux, f, versions.next(), answers, prefix))
                show(size.mux[-1], lines)
    result = load.result
    size.sent, size.failed, size.errors = result.sent, result.failed, result.errors[:5]
    return size


def deploy_everywhere(sim: SimulatedFleet, n: int, versions: Versions) -> None:
    """The first deploy (v1) on each of the *n* hosts, one after the other (cold: a new
    venv each)."""
    f = sim(n)
    ref = f"v{versions.number}"
    for host in f.hosts:
        started = time.monotonic()
        done = f.ssh(host, "deploy", ref, timeout=600)
        if done.returncode != 0:
            raise SystemExit(f"{host.name}: first deploy exited {done.returncode}:\n"
                             f"{done.stdout}{done.stderr}\n{host.log_tail()}")
        log_step(f"{host.name}: {ref} deployed (cold) in {time.monotonic() - started:.1f} s")


# --- the report -------------------------------------------------------------------------------

def host_seconds(run: Run, key: str) -> list[float]:
    return [float(h[key]) for h in run.report.get("hosts", []) if h.get(key) is not None]


def print_walls(sizes: list[Size]) -> None:
    print("\n1. wall time, median of the repeats; the coordinator's share from its --json "
          "report\n   (1st line: the coordinator's first line, `release host: runs "
          "release.commands`, after its start and\n   its status round; prep/switch: the "
          "slowest host's; coord = wall - slowest prepare - slowest switch)")
    print(f"   {'hosts':>5} {'single':>7} {'together':>9} {'ratio':>6} {'1st line':>9} "
          f"{'prep':>6} {'switch':>7} {'coord':>6} {'sum prep':>9} {'CPU 1/fleet':>12} "
          f"{'rolling':>8} {'ratio':>6}")
    for s in sizes:
        single = med([r.wall for r in s.single])
        wall = med([r.wall for r in s.together])
        prep = med([max(host_seconds(r, "prepare_s"), default=0) for r in s.together])
        switch = med([max(host_seconds(r, "switch_s"), default=0) for r in s.together])
        total = med([sum(host_seconds(r, "prepare_s")) for r in s.together])
        coord = med([coordinator_share(r) for r in s.together])
        cpu = f"{med([r.cpu for r in s.single]):.0%}/{med([r.cpu for r in s.together]):.0%}"
        roll = med([r.wall for r in s.rolling])
        rolled = (f"{roll:7.2f}s {roll / single:5.2f}x" if s.rolling
                  else f"{'-':>8} {'-':>6}")
        first = med([r.timeline[0][0] for r in s.together if r.timeline])
        print(f"   {s.n:5d} {single:6.2f}s {wall:8.2f}s {wall / single:5.2f}x {first:8.2f}s "
              f"{prep:5.2f}s {switch:6.2f}s {coord:5.2f}s {total:8.2f}s {cpu:>12} {rolled}")
    cli = med([t for s in sizes for t in s.cli_start])
    ssh = med([t for s in sizes for t in s.ssh_status])
    print(f"   fixed costs (median): the relman CLI's start here (`relman --version`) "
          f"{cli:.2f} s; one ssh session to a host (`ssh HOST relman status`) {ssh:.2f} s.\n"
          "   A coordinator starts once and opens one `relman session` per host, which runs "
          "its status,\n   build, prepare and switch; a single deploy is one session. CPU: "
          "the machine's busy share during\n   the single / together runs.")
    print("\n   to live: from the start to the (last) host's `switched` line, the release "
          "serving everywhere.\n   A single deploy then drains and stops the old release "
          "before it exits; a fleet's\n   switch keeps it warm (`--keep-warm`, for the "
          "fleet's recovery) and exits: this compares\n   like with like.")
    print(f"   {'hosts':>5} {'single':>7} {'together':>9} {'ratio':>6}")
    for s in sizes:
        single, fleet = to_live(s.single), to_live(s.together)
        print(f"   {s.n:5d} {single:6.2f}s {fleet:8.2f}s {fleet / single:5.2f}x")


def to_live(runs: list[Run]) -> float:
    return med([r.to_live for r in runs])


def print_windows(sizes: list[Size]) -> None:
    print("\n2. mixed-version window (first host on the new release to the last), median of "
          "the repeats, seconds\n   nginx: answers through the front nginx (+- its "
          "sampling); link: hosts' app.sock mtimes; lines: the coordinator's `switched` "
          "lines")
    print("   after prep.: from the last host's `prepared` line to the first and the last "
          "`switched` line;\n   job: the host's own time from its switch job's start to "
          "the switch (the line says it)")
    print(f"   {'hosts':>5} {'strategy':9} {'nginx':>7} {'+-':>6} {'link':>7} {'lines':>7} "
          f"{'after prep.':>13} {'job':>7}")
    for s in sizes:
        if s.n < 2:
            continue
        for name, runs in (("together", s.together), ("rolling", s.rolling)):
            figures = [med(r.windows.get(k, float("nan")) for r in runs)
                       for k in ("nginx", "link", "lines")]
            precision = med([r.precision for r in runs])
            first = med([r.after_prepared[0] for r in runs])
            last = med([r.after_prepared[1] for r in runs])
            job = med([r.job_ms for r in runs])
            print(f"   {s.n:5d} {name:9} {figures[0]:7.3f} {precision:6.3f} "
                  f"{figures[1]:7.3f} {figures[2]:7.3f} {first:6.2f}-{last:<6.2f} "
                  f"{job:4.0f} ms")


def coordinator_share(run: Run) -> float:
    return (run.wall - max(host_seconds(run, "prepare_s"), default=0)
            - max(host_seconds(run, "switch_s"), default=0))


def print_mux(sizes: list[Size]) -> None:
    if not any(s.mux for s in sizes):
        return
    print("\n4. together, ssh reusing a master connection per host (ControlMaster=auto, "
          "masters started first),\n   against the same deploy without; `fleet status` "
          "is one session per host at once")
    print(f"   {'hosts':>5} {'single':>7} {'together':>9} {'masters':>8} {'ratio':>6} "
          f"{'coord':>6} {'coord m.':>8} {'window m.':>9} {'fleet status m.':>16}")
    for s in sizes:
        single = med([r.wall for r in s.single])
        wall, mux = med([r.wall for r in s.together]), med([r.wall for r in s.mux])
        window = med(r.windows.get("nginx", float("nan")) for r in s.mux)
        shown = f"{window:8.3f}s" if s.n > 1 else f"{'-':>9}"  # one host: no window
        print(f"   {s.n:5d} {single:6.2f}s {wall:8.2f}s {mux:7.2f}s {mux / single:5.2f}x "
              f"{med([coordinator_share(r) for r in s.together]):5.2f}s "
              f"{med([coordinator_share(r) for r in s.mux]):7.2f}s {shown} "
              f"{med(s.mux_status):15.2f}s")


def print_requests(sizes: list[Size]) -> None:
    print("\n3. requests through the front nginx during all the runs")
    for s in sizes:
        print(f"   {s.n} host(s): {s.sent} sent, {s.failed} failed"
              + (f" ({', '.join(s.errors)})" if s.errors else ""))


def goals(sizes: list[Size]) -> bool:
    largest = max(sizes, key=lambda s: s.n)
    ratio = med([r.wall for r in largest.together]) / med([r.wall for r in largest.single])
    windows = [med(r.windows.get("nginx", float("nan")) for r in s.together)
               for s in sizes if s.n > 1]
    failed = sum(s.failed for s in sizes)
    live = to_live(largest.together) / to_live(largest.single)
    checks = [(f"fleet deploy at {largest.n} hosts <= {GOAL_RATIO}x a single host's",
               ratio <= GOAL_RATIO, f"{ratio:.2f}x"),
              ("the same, to the release live on every host (without the single "
               "deploy's drain)", live <= GOAL_RATIO, f"{live:.2f}x"),
              (f"together window < {GOAL_WINDOW:g} s (nginx) at every size",
               all(w < GOAL_WINDOW for w in windows),
               ", ".join(f"{w:.3f} s" for w in windows) or "no size above 1 host"),
              ("0 failed requests", failed == 0, str(failed))]
    print("\ngoals:")
    for text, met, figure in checks:
        print(f"   {'met   ' if met else 'MISSED'} {text}: {figure}")
    return all(met for _, met, _ in checks)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--hosts", default="1,2,4,6", help="fleet sizes, comma-separated")
    parser.add_argument("--repeats", type=int, default=3, help="runs per figure (median)")
    parser.add_argument("--quick", action="store_true", help="one run per figure")
    parser.add_argument("--host-cpu", type=float, default=None, metavar="CORES",
                        help="each host's CPU share in cores (cgroup v1 CFS quota; default "
                        "0.9 x cores / the largest size; 0: the hosts share the machine)")
    parser.add_argument("--mux", action="store_true",
                        help="also the together deploy with ssh reusing a master "
                        "connection per host (ControlMaster)")
    parser.add_argument("--lines", action="store_true",
                        help="each fleet run's output lines, timed, on stderr")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench/fleet.py runs as root: its simulated hosts are unix users")
    ns = sorted({int(n) for n in args.hosts.split(",")})
    args.repeats = repeats = 1 if args.quick else args.repeats
    os.environ.setdefault("UV_CACHE_DIR", os.path.expanduser("~/.cache/relman-tests-uv"))
    os.environ.setdefault("UV_PYTHON_DOWNLOADS", "never")
    cores = os.cpu_count() or 1
    if args.host_cpu is None:
        args.host_cpu = round((cores - CLIENT_CPU - COORDINATOR_CPU) / max(ns), 2)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    share = (f"each host {args.host_cpu:g} cores, load and front nginx {CLIENT_CPU:g} (cgroup "
             "CPU quotas), the coordinator the rest" if args.host_cpu
             else "the hosts share the machine's cores")
    print(f"relman fleet bench: {cores} cores, load average {load}, {repeats} repeat(s); "
          f"{share}", flush=True)
    with simulated_fleet(args.host_cpu) as sim:
        log_step(f"making {max(ns)} hosts")
        versions = Versions(sim.repo)
        deploy_everywhere(sim, max(ns), versions)
        if sim.cpu is not None:
            sim.cpu.clients(CLIENT_CPU)
        sizes = [bench_size(sim, n, versions, args) for n in ns]
    print_walls(sizes)
    print_windows(sizes)
    print_requests(sizes)
    print_mux(sizes)
    raise SystemExit(0 if goals(sizes) else 1)


if __name__ == "__main__":
    main()

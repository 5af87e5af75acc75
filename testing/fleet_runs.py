"""One fleet deploy as bench/fleet.py measures it: the real coordinator CLI run with its
lines timed as they arrive, what the front nginx answered (which host, which version, when),
and each host's switch seen three ways (those answers, the hosts' run/app.sock mtimes, the
coordinator's `switched` lines); also the fleet-only configs and ssh master connections the
bench runs it with."""

from __future__ import annotations

import contextlib
import json
import os
import re
import statistics
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.client import HTTPResponse
from pathlib import Path
from typing import Any

import psutil

from testing.daemon import RELMAN
from testing.fleet import Fleet, Host

# the host's `switched` line: "app.sock -> ID.sock (41 ms after the job began)"
JOB_MS = re.compile(r"\((\d+(?:\.\d+)?) ms after the job began\)")
# time.time() - time.monotonic(): Load's times and the hosts' link mtimes on one clock
EPOCH = time.time() - time.monotonic()


# --- what the front nginx answered ------------------------------------------------------------

@dataclass
class Answers:
    """(started, ended, host, version) of each answer through the front nginx, wall clock."""
    by_socket: dict[str, str]  # X-Upstream -> host name
    seen: list[tuple[float, float, str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def observe(self, started: float, ended: float, response: HTTPResponse, body: bytes
                ) -> None:
        if response.status != 200:
            return  # Load counts it as failed
        words = body.split(maxsplit=2)
        host = self.by_socket.get(response.headers.get("X-Upstream", ""), "?")
        version = words[1].decode() if len(words) > 1 else "?"
        with self.lock:
            self.seen.append((started + EPOCH, ended + EPOCH, host, version))

    def switches(self, hosts: list[str], version: str, since: float
                 ) -> dict[str, tuple[float, float]] | None:
        """Each host's switch to *version* after *since*: (middle, half-width) of the
        interval between its last old answer's start and its first new answer's end; None
        when a host was not seen on both sides."""
        with self.lock:
            seen = [s for s in self.seen if s[1] >= since]
        found = {}
        for host in hosts:
            new_end = min((e for _, e, h, v in seen if h == host and v == version),
                          default=None)
            if new_end is None:
                return None
            old_start = max((s for s, _, h, v in seen
                             if h == host and v != version and s < new_end), default=None)
            if old_start is None:
                return None
            found[host] = ((old_start + new_end) / 2, (new_end - old_start) / 2)
        return found


def spread(times: list[float]) -> float:
    return max(times) - min(times) if times else float("nan")


# --- the runs -----------------------------------------------------------------------------------

@dataclass
class Run:
    """One deploy: its wall time, the machine's CPU use, and (fleet) its report and windows."""
    wall: float
    cpu: float  # busy share of all cores, 0..1
    report: dict[str, Any] = field(default_factory=dict)
    windows: dict[str, float] = field(default_factory=dict)  # method -> seconds
    precision: float = float("nan")  # the nginx method's +-
    timeline: list[tuple[float, str]] = field(default_factory=list)  # (seconds, line)
    # from the last host's `prepared` line to the first and the last `switched` line
    after_prepared: tuple[float, float] = (float("nan"), float("nan"))
    job_ms: float = float("nan")  # median: each host's own job start to its switch
    # from the start to the (last) host's `switched` line: the release live everywhere,
    # without what a deploy does after (a single deploy drains and stops the old release
    # before it exits; a fleet's switch keeps it warm for the fleet's recovery)
    to_live: float = float("nan")


def cpu_busy() -> tuple[float, float]:
    t = psutil.cpu_times()
    return t.user + t.nice + t.system + t.irq + t.softirq + t.steal, sum(t)


def busy_since(before: tuple[float, float]) -> float:
    busy, total = cpu_busy()
    return (busy - before[0]) / max(total - before[1], 1e-9)


def coordinator_env() -> dict[str, str]:
    """This environment without an ssh agent (the key is named) or a RELMAN_CONFIG."""
    return {k: v for k, v in os.environ.items() if k not in ("SSH_AUTH_SOCK", "RELMAN_CONFIG")}


def single_deploy(f: Fleet, host: Host, ref: str, prefix: tuple[str, ...] = ()) -> Run:
    """`ssh HOST relman deploy REF` (after *prefix*), its `[switched]` line timed as it
    arrives."""
    before, started = cpu_busy(), time.monotonic()
    proc = subprocess.Popen([*prefix, *f.ssh_argv(host, "deploy", ref)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=coordinator_env())
    assert proc.stdout is not None
    said, to_live = [], float("nan")
    for line in proc.stdout:
        said.append(line)
        if line.startswith("[switched]") and to_live != to_live:
            to_live = time.monotonic() - started
    code = proc.wait()
    wall = time.monotonic() - started
    if code != 0:
        raise SystemExit(f"ssh {host.name} relman deploy {ref} exited {code}:\n"
                         f"{''.join(said)}\n{host.log_tail()}")
    return Run(wall, busy_since(before), to_live=to_live)


def fleet_deploy(config: Path, f: Fleet, ref: str, answers: Answers,
                 prefix: tuple[str, ...] = ()) -> Run:
    """`relman --json --config CONFIG fleet deploy REF` (after *prefix*), each line timed as
    it arrives."""
    env = coordinator_env()
    by_destination = {h.destination: h.name for h in f.hosts}
    lines: dict[str, float] = {}
    prepared: list[float] = []
    job_ms: list[float] = []
    said: list[str] = []
    report: dict[str, Any] = {}
    before, since, started = cpu_busy(), time.time(), time.monotonic()
    proc = subprocess.Popen([*prefix, *RELMAN, "--json", "--config", str(config), "fleet",
                             "deploy", ref], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)
    assert proc.stdout is not None
    timeline = []
    for line in proc.stdout:
        arrived = time.time()
        said.append(line)
        timeline.append((arrived - since, line.rstrip("\n")))
        event = _json(line)
        if event.get("type") == "progress" and event.get("step") == "switched":
            lines.setdefault(by_destination.get(event.get("host", ""), "?"), arrived)
            found = JOB_MS.search(str(event.get("message", "")))
            if found:
                job_ms.append(float(found[1]))
        elif event.get("type") == "progress" and event.get("step") == "prepared":
            prepared.append(arrived)
        elif event.get("type") == "fleet":
            report = event
    code = proc.wait()
    wall = time.monotonic() - started
    cpu = busy_since(before)
    if code != 0 or report.get("outcome") != "deployed":
        raise SystemExit(f"fleet deploy {ref} exited {code}:\n{''.join(said[-40:])}")
    names = [h.name for h in f.hosts]
    links = [(h.root / "run" / "app.sock").lstat().st_mtime for h in f.hosts]
    run = Run(wall, cpu, report, {"link": spread(links),
                                  "lines": spread([lines[n] for n in names if n in lines])},
              timeline=timeline, job_ms=med(job_ms))
    _switch_times(run, lines, prepared, since)
    time.sleep(0.5)  # a few more answers after the last switch
    seen = answers.switches(names, ref, since)
    if seen is not None:
        run.windows["nginx"] = spread([m for m, _ in seen.values()])
        run.precision = max(w for _, w in seen.values())
    return run


def _switch_times(run: Run, switched: dict[str, float], prepared: list[float],
                  since: float) -> None:
    """*run*'s times to the last `switched` line: from its start (*since*), and from the
    last host's `prepared` line."""
    if switched:
        run.to_live = max(switched.values()) - since
    if prepared and switched:
        run.after_prepared = (min(switched.values()) - max(prepared),
                              max(switched.values()) - max(prepared))


def _json(line: str) -> dict[str, Any]:
    try:
        value = json.loads(line)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def fleet_toml(path: Path, f: Fleet, ssh: tuple[str, ...] = (), **fleet: str | int | bool
               ) -> Path:
    """A fleet-only config: [app] name and [fleet] (these hosts, this ssh and *ssh*
    options, *fleet*)."""
    table = {"hosts": list(f.config.hosts), "ssh": [*f.config.ssh, *ssh], **fleet}
    # JSON strings, integers, booleans and arrays of strings are TOML as they are
    path.write_text('[app]\nname = "sample"\n\n[fleet]\n'
                    + "".join(f"{k} = {json.dumps(v)}\n" for k, v in table.items()))
    return path


def mux_options(base: Path) -> tuple[str, ...]:
    """ssh options that reuse one master connection per host (ssh_config(5)); %C is a hash
    of the local host, user, host and port, so one path per host user."""
    return ("-o", "ControlMaster=auto", "-o", f"ControlPath={base}/cm-%C",
            "-o", "ControlPersist=yes")


@contextlib.contextmanager
def ssh_masters(f: Fleet, options: tuple[str, ...]) -> Iterator[None]:
    """A master connection to each host, started here (ssh -fN) so that no measured run
    pays for its handshake, as with a ControlPersist a user's earlier command left;
    `ssh -O exit` at the end."""
    def ssh(host: Host, *args: str) -> list[str]:
        return [*f.config.ssh, *options, *args, "-p", str(host.port), "--",
                f"{host.name}@127.0.0.1"]

    quiet: dict[str, Any] = {"stdin": subprocess.DEVNULL, "stdout": subprocess.DEVNULL,
                             "stderr": subprocess.DEVNULL, "timeout": 60, "check": False}
    try:
        for host in f.hosts:
            subprocess.run(ssh(host, "-o", "ControlMaster=yes", "-fN"), **quiet)
        yield
    finally:
        for host in f.hosts:
            subprocess.run(ssh(host, "-O", "exit"), **quiet)


def med(values: Iterator[float] | list[float]) -> float:
    found = [v for v in values if v == v]  # not NaN
    return statistics.median(found) if found else float("nan")

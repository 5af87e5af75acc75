"""The coordinator as a user runs it, for tests of `relman fleet` over the simulated fleet
(testing/fleet.py): a fleet-only relman.toml, the real CLI as a subprocess (this venv's
relman, as root) whose JSON lines are read as they come, and what the front nginx and each
host say afterwards."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import tomllib
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil

from testing.daemon import toml_value, write_config
from testing.fleet import Fleet, Host
from testing.git import release_version
from testing.load import Load
from testing.waiting import wait_until

RELMAN = (sys.executable, "-m", "relman")


def fleet_toml(path: Path, fleet: Fleet, *, extra_hosts: Sequence[str] = (),
               **keys: Any) -> Path:
    """A config for `relman fleet` only: `[app] name = "sample"` and `[fleet]` with the
    fleet's hosts (then *extra_hosts*), its ssh argv and *keys* (strategy, canary, ...)."""
    table = {"hosts": [*fleet.config.hosts, *extra_hosts], "ssh": list(fleet.config.ssh),
             **keys}
    lines = ["[app]", 'name = "sample"', "", "[fleet]"]
    lines += [f"{key} = {toml_value(value)}" for key, value in table.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def _env() -> dict[str, str]:
    # The key comes from the config's ssh argv (IdentitiesOnly): no agent of the caller's.
    return {k: v for k, v in os.environ.items()
            if k not in ("SSH_AUTH_SOCK", "RELMAN_CONFIG")}


def relman(config: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """`relman --config CONFIG ARGS`, the real CLI, to its end."""
    return subprocess.run([*RELMAN, "--config", str(config), *args], capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=timeout, env=_env(),
                          check=False)


class Coordinator:
    """`relman --config CONFIG --json fleet ARGS` running; its stdout lines as they come
    (progress objects, then the report), so a test can act at a given line."""

    def __init__(self, config: Path, *args: str) -> None:
        self.proc = subprocess.Popen([*RELMAN, "--config", str(config), "--json", "fleet",
                                      *args], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=_env())
        self.lines: list[str] = []
        self.stderr = ""
        self._readers = [threading.Thread(target=self._read_stdout, daemon=True),
                         threading.Thread(target=self._read_stderr, daemon=True)]
        for reader in self._readers:
            reader.start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        self.stderr = self.proc.stderr.read()

    @property
    def objects(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in list(self.lines) if line.startswith("{")]

    @property
    def progress(self) -> list[dict[str, Any]]:
        return [o for o in self.objects if o.get("type") == "progress"]

    def said(self) -> str:
        return "\n".join(self.lines) + "\n--- stderr ---\n" + self.stderr

    def wait_for(self, wanted: Callable[[dict[str, Any]], bool], what: str,
                 timeout: float = 240) -> dict[str, Any]:
        """The first progress line *wanted* accepts, once it has come."""
        def seen() -> dict[str, Any] | None:
            found = next((p for p in self.progress if wanted(p)), None)
            if found is None and self.proc.poll() is not None:
                self.finish(10)
                raise AssertionError(f"the coordinator exited {self.proc.returncode} before "
                                     f"{what}:\n{self.said()}")
            return found

        return wait_until(seen, timeout=timeout, interval=0.02, what=what)

    def terminate(self) -> None:
        """SIGTERM the coordinator (Ctrl-C's twin): it should stop in order."""
        self.proc.send_signal(signal.SIGTERM)

    def kill9(self) -> list[psutil.Process]:
        """SIGKILL the coordinator (only it: its ssh sessions run in sessions of their own);
        the ssh processes it had running, which go on without it."""
        children = psutil.Process(self.proc.pid).children(recursive=True)
        self.proc.kill()
        self.finish(10)
        return children

    def finish(self, timeout: float = 600) -> tuple[int, dict[str, Any] | None]:
        """Its exit status and its report (the {"type": "fleet"} object), if any."""
        code = self.proc.wait(timeout)
        for reader in self._readers:
            reader.join(30)
        reports = [o for o in self.objects if o.get("type") == "fleet"]
        return code, reports[-1] if reports else None

    @property
    def error(self) -> dict[str, Any] | None:
        """The {"error": ...} object it ended with (--json puts it on stdout), if any."""
        errors = [o["error"] for o in self.objects if "error" in o]
        return errors[-1] if errors else None


def is_canary_watch(line: dict[str, Any]) -> bool:
    """The coordinator's line saying it watches the canary hosts (they have switched)."""
    return line["step"] == "canary" and line["message"].startswith("watching")


def results(report: dict[str, Any]) -> dict[str, str]:
    """host -> its RESULT in a fleet report."""
    return {h["host"]: h["result"] for h in report["hosts"]}


def served(url: str) -> tuple[str, str, int]:
    """(socket the front nginx used, the sample app's version, the worker's uid) for one
    GET /; the sample app answers "sample VERSION pid PID release ID"."""
    with urllib.request.urlopen(url + "/", timeout=10) as response:
        words = response.read().decode().split()
        return response.headers["X-Upstream"], words[1], psutil.Process(int(words[3])).uids()[0]


def versions_by_host(url: str, hosts: dict[str, int]) -> dict[str, str]:
    """Each upstream socket's version, asking until all *hosts* (socket -> the uid its
    server must run as) have answered."""
    seen: dict[str, str] = {}

    def all_seen() -> bool:
        upstream, version, uid = served(url)
        assert uid == hosts[upstream], f"{upstream} answered from uid {uid}"
        seen[upstream] = version
        return len(seen) == len(hosts)

    wait_until(all_seen, timeout=30, interval=0, what=f"all {hosts} hosts to answer")
    return seen


def front_versions(fleet: Fleet) -> dict[str, str]:
    """host name -> the version the front nginx gets from it."""
    sockets = {f"unix:{h.root}/run/app.sock": h for h in fleet.hosts}
    seen = versions_by_host(fleet.url, {s: h.uid for s, h in sockets.items()})
    return {sockets[s].name: v for s, v in seen.items()}


def idle(host: Host) -> dict[str, Any]:
    """*host*'s status once no job runs there (a build a killed coordinator left going)."""
    def settled() -> dict[str, Any] | None:
        status: dict[str, Any] = host.json("status")
        return None if status.get("job") else status

    return wait_until(settled, timeout=120, interval=0.5, what=f"{host.name} to be idle")


@contextmanager
def host_config(host: Host, change: Callable[[dict[str, Any]], None]) -> Iterator[None]:
    """*host*'s relman.toml changed by *change* (on the parsed tables) for the block, then
    put back byte for byte. Written in place (owner and mode kept); a deploy reads it afresh
    and the daemon's file watch reloads it."""
    before = host.config.read_bytes()
    tables = tomllib.loads(before.decode())
    change(tables)
    app = tables.pop("app")
    write_config(host.config, name=app.pop("name"), repo=app.pop("repo"),
                 root=app.pop("root"), app=app, **tables)
    try:
        yield
    finally:
        host.config.write_bytes(before)


_BASELINES = iter(range(1, 1_000_000))


def settle(fleet: Fleet) -> dict[str, bytes]:
    """Every host of *fleet* live on one release, nothing prepared, no job (each host
    deploys a fresh base version over ssh, one by one, when that is not so already; the
    hosts are the session's, other tests leave them as they like). Each host's config as
    it is now, for check_left_alone."""
    statuses = [idle(h) for h in fleet.hosts]
    lives = {s.get("live") for s in statuses}
    if None in lives or len(lives) > 1 or any(s.get("prepared") for s in statuses):
        for host, status in zip(fleet.hosts, statuses, strict=True):
            if status.get("prepared"):
                host.relman("abort", str(status["prepared"]), check=True)
        tag = f"base{next(_BASELINES)}-{os.getpid()}"
        release_version(fleet.repo, tag)
        for host in fleet.hosts:
            done = fleet.ssh(host, "deploy", tag)
            assert done.returncode == 0, f"{host.name}: {done.stdout}{done.stderr}"
    return {h.name: h.config.read_bytes() for h in fleet.hosts}


def check_left_alone(fleet: Fleet, configs: dict[str, bytes]) -> None:
    """What a fleet test must leave: every host's daemon running, no job, no candidate
    prepared, its config as *configs* has it."""
    for host in fleet.hosts:
        assert host.proc is not None, f"{host.name}'s daemon is not running"
        assert host.proc.poll() is None, f"{host.name}'s daemon exited:\n{host.log_tail()}"
        assert idle(host)["prepared"] is None, f"{host.name} has a candidate prepared"
        assert host.config.read_bytes() == configs[host.name], f"{host.name}'s config changed"


def live_release(fleet: Fleet) -> str:
    """The one release every host serves."""
    lives = {idle(h)["live"] for h in fleet.hosts}
    assert len(lives) == 1, lives
    return str(lives.pop())


def fleet_run(fleet: Fleet, config: Path, *args: str) -> tuple[int, dict[str, Any],
                                                               Coordinator]:
    """`relman --json fleet ARGS` to its end, under load through the front nginx: its exit
    status, its report, its lines; no request may fail meanwhile."""
    with under_load(fleet):
        coordinator = Coordinator(config, *args)
        code, report = coordinator.finish()
    assert report is not None, coordinator.said()
    return code, report, coordinator


@contextmanager
def under_load(fleet: Fleet) -> Iterator[Load]:
    """Requests through the front nginx (4 clients) for the block; none may fail."""
    with Load(fleet.url, concurrency=4) as load:
        yield load
    assert load.result.sent > 0
    assert load.result.failed == 0, load.result.errors[:5]


def assert_fleet_on(fleet: Fleet, release: str, version: str) -> None:
    """Every host live on *release*, nothing prepared, and the front nginx gets *version*
    from each."""
    for host in fleet.hosts:
        status = idle(host)
        assert (status["live"], status["prepared"]) == (release, None), (host.name, status)
    assert front_versions(fleet) == dict.fromkeys((h.name for h in fleet.hosts), version)


def index(progress: list[dict[str, Any]], host: str, step: str, start: str = "") -> int:
    """Where the first line of *host* with *step* (and a message starting *start*) is."""
    return next(i for i, p in enumerate(progress)
                if (p["host"], p["step"]) == (host, step) and p["message"].startswith(start))

"""Process units ([processes.NAME]) under the Supervisor itself, with real processes: their
stop signal, SIGKILL of all their processes after the timeout, grandchildren that left the
session, and adoption by a new Supervisor over the same run directory ("daemon death").

Each test runs with cgroup tracking (root, a cgroup v2 hierarchy) and with the environment
tags a daemon without cgroups falls back to.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
from structlog.testing import capture_logs

from relman.supervisor import ServerHandle, ServerSpec, Supervisor, Tracker
from relman.supervisor.cgroups import CgroupTree
from testing.leftovers import kill_leftover_servers
from testing.needs import need, need_root

RELEASE = "20261123T031500Z-1a2b3c4"
WAIT = 20.0  # the bound of every wait; none is a timing assertion

# The process: records the signal that stopped it; "ignore" ignores every stop signal;
# "fork" leaves a grandchild in a session of its own (double fork + setsid) that ignores
# SIGTERM and would outlive it.
WORKER = textwrap.dedent("""\
    import os, signal, sys, time
    mode, out = sys.argv[1], sys.argv[2]

    def stopped(sig, frame):
        with open(os.path.join(out, "got"), "w") as f:
            f.write(signal.Signals(sig).name)
        sys.exit(0)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN if mode == "ignore" else stopped)
    if mode == "fork" and os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            with open(os.path.join(out, "grandchild.tmp"), "w") as f:
                f.write(str(os.getpid()))
            os.rename(os.path.join(out, "grandchild.tmp"), os.path.join(out, "grandchild"))
            while True:
                time.sleep(1)
        os._exit(0)
    with open(os.path.join(out, "ready"), "w") as f:
        f.write(str(os.getpid()))
    while True:
        time.sleep(1)
""")


@dataclass
class Unit:
    """An app root with run/ and log/, a release directory, and how it is tracked."""

    root: Path
    tracker: Tracker

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def log(self) -> Path:
        return self.root / "log"

    def supervisor(self) -> Supervisor:
        return Supervisor(self.run, self.log, self.tracker)

    def spec(self, sup: Supervisor, mode: str, *, process: str = "worker", index: int = 1,
             stop_signal: int = signal.SIGTERM) -> ServerSpec:
        instance = sup.next_instance(RELEASE, process, index)
        out = self.root / "out" / instance
        out.mkdir(parents=True)
        return ServerSpec(
            instance=instance, release=RELEASE,
            argv=(sys.executable, str(self.root / "worker.py"), mode, str(out)),
            cwd=self.root / "releases" / RELEASE,
            env={"PATH": os.environ.get("PATH", os.defpath), "RELMAN_RELEASE": RELEASE,
                 "RELMAN_PROCESS": process, "RELMAN_INSTANCE": str(index)},
            socket=self.run / f"{instance}.sock" if process == "web" else None,
            pidfile=self.run / f"{instance}.pid",
            log=self.log / (f"{RELEASE}.log" if process == "web" else
                            f"{RELEASE}.{process}.log"),
            process=process, index=index, stop_signal=stop_signal)


@pytest.fixture(params=["cgroup", "tags"])
def unit(request, tmp_path: Path) -> Iterator[Unit]:
    root = tmp_path / "app"
    for sub in ("run", "log", "out", f"releases/{RELEASE}"):
        (root / sub).mkdir(parents=True)
    (root / "worker.py").write_text(WORKER)
    tree = None
    if request.param == "cgroup":
        need_root("only root may create cgroups outside a delegated systemd unit")
        tree = CgroupTree.find("units", root)
        need(tree is not None, "no writable cgroup v2 hierarchy", "run on a host with cgroup v2")
    yield Unit(root, Tracker("units", root, tree))
    kill_leftover_servers(root)
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if proc.cwd().startswith(str(root)):
                proc.kill()
    if tree is not None:
        for instance in tree.instances():
            tree.kill(instance)
            wait_for(lambda i=instance: tree.remove(i), f"cgroup {instance} removed")
        tree.remove_base()


def wait_for(predicate, what: str) -> object:
    """Poll *predicate* (blocking) until it is truthy; TimeoutError after WAIT seconds."""
    return asyncio.run(await_for(predicate, what))


async def await_for(predicate, what: str) -> object:
    async with asyncio.timeout(WAIT):
        while not (value := predicate()):
            await asyncio.sleep(0.02)
    return value


async def ready(handle: ServerHandle) -> int:
    out = Path(handle.record.cwd).parents[1] / "out" / handle.instance
    return int(await await_for(lambda: _read(out / "ready"), f"{handle.instance} ready"))


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_a_process_that_ignores_its_stop_signal_is_killed(unit):
    """A process that ignores its stop signal is SIGKILLed with all its processes after the
    timeout; stop() says it had to kill, and the escalation is logged."""
    async def scenario() -> None:
        sup = unit.supervisor()
        handle = sup.start(unit.spec(sup, "ignore"))
        await ready(handle)
        with capture_logs() as logs:
            graceful = await sup.stop(handle, timeout=0.5)
        assert graceful is False
        assert handle.returncode == -signal.SIGKILL
        assert any(e["event"] == "server.kill_escalated" and e["instance"] == handle.instance
                   for e in logs)
        assert not handle.pidfile.exists()
        assert not unit.tracker.members(handle.record)
    asyncio.run(scenario())


def test_a_process_gets_its_own_stop_signal(unit):
    """A process with stop_signal = INT is sent SIGINT, not SIGTERM, and stops gracefully;
    it runs with RELMAN_UNIT naming its instance and RELMAN_INSTANCE its index."""
    async def scenario() -> None:
        sup = unit.supervisor()
        spec = unit.spec(sup, "handle", process="beat", index=2, stop_signal=signal.SIGINT)
        handle = sup.start(spec)
        pid = await ready(handle)
        assert (handle.process, handle.index, handle.socket) == ("beat", 2, None)
        env = psutil.Process(pid).environ()
        assert env["RELMAN_UNIT"] == handle.instance == f"{RELEASE}.beat.2.1"
        assert env["RELMAN_INSTANCE"] == "2"
        assert await sup.stop(handle, timeout=WAIT) is True
        assert _read(unit.root / "out" / handle.instance / "got") == "SIGINT"
        assert spec.log.read_text().startswith(f"--- relman: starting beat 2 ({spec.instance})")
    asyncio.run(scenario())


def test_stop_leaves_no_grandchild(unit):
    """A process whose grandchild left its session and ignores SIGTERM: stop leaves none of
    them running (the grandchild is found by its cgroup or its tags)."""
    async def scenario() -> None:
        sup = unit.supervisor()
        handle = sup.start(unit.spec(sup, "fork"))
        pid = await ready(handle)
        out = unit.root / "out" / handle.instance
        grandchild = int(await await_for(lambda: _read(out / "grandchild"), "the grandchild"))
        assert os.getsid(grandchild) != os.getsid(pid)
        assert await sup.stop(handle, timeout=WAIT) is True
        await await_for(lambda: gone(pid) and gone(grandchild), "no process of the unit")
        assert not unit.tracker.members(handle.record)
    asyncio.run(scenario())


def test_a_new_supervisor_adopts_a_running_process(unit):
    """After the daemon's death, a new Supervisor over the same run directory adopts the
    same process (same pid, not restarted) with its process, index, stop signal and log,
    and no socket; stopping it then ends it."""
    async def first_daemon() -> tuple[ServerHandle, int]:
        sup = unit.supervisor()
        handle = sup.start(unit.spec(sup, "handle", index=3, stop_signal=signal.SIGQUIT))
        pid = await ready(handle)
        handle.close()  # the daemon dies: its pidfd goes, the process does not
        return handle, pid

    async def second_daemon(pid: int) -> None:
        sup = unit.supervisor()
        adoption = await sup.adopt_all(stray_timeout=5)
        assert adoption.notes == []
        (handle,) = adoption.handles
        assert handle.pid == pid
        assert (handle.process, handle.index, handle.stop_signal) == \
            ("worker", 3, signal.SIGQUIT)
        assert handle.socket is None
        assert handle.log == unit.log / f"{RELEASE}.worker.log"
        assert handle.describe(None, live=False).process == "worker"
        with pytest.raises(TypeError):
            _ = handle.listener
        assert sup.next_instance(RELEASE, "worker", 3) == f"{RELEASE}.worker.3.2"
        assert await sup.stop(handle, timeout=WAIT) is True
        assert _read(unit.root / "out" / handle.instance / "got") == "SIGQUIT"

    first, pid = asyncio.run(first_daemon())
    asyncio.run(second_daemon(pid))
    assert first.popen is not None
    first.popen.wait(WAIT)  # the test process was the first daemon: it reaps
    assert not list(unit.run.glob("*.pid"))


def test_an_older_daemons_server_is_adopted_with_its_helpers(unit, monkeypatch):
    """A server an older daemon started, tagged RELMAN_INSTANCE=<instance> and no
    RELMAN_UNIT, is adopted by a new Supervisor, and stopping it ends its double-forked
    helper too: tracking still knows the old tag."""
    def legacy_tags(instance: str) -> dict[str, str]:
        return {"RELMAN_APP": "units", "RELMAN_ROOT": str(unit.root),
                "RELMAN_INSTANCE": instance}

    async def older_daemon() -> tuple[ServerHandle, int, int]:
        sup = unit.supervisor()
        with monkeypatch.context() as m:
            m.setattr(unit.tracker, "tags", legacy_tags)
            spec = unit.spec(sup, "fork", process="web")
            handle = sup.start(dataclasses.replace(spec, env={
                k: v for k, v in spec.env.items() if k != "RELMAN_INSTANCE"}))
        pid = await ready(handle)
        out = unit.root / "out" / handle.instance
        grandchild = int(await await_for(lambda: _read(out / "grandchild"), "the helper"))
        assert "RELMAN_UNIT" not in psutil.Process(grandchild).environ()
        handle.close()
        return handle, pid, grandchild

    async def new_daemon(pid: int, grandchild: int) -> None:
        sup = unit.supervisor()
        adoption = await sup.adopt_all(stray_timeout=5)
        (handle,) = adoption.handles
        assert (handle.pid, handle.process, handle.instance) == (pid, "web", f"{RELEASE}.1")
        assert handle.listener == unit.run / f"{RELEASE}.1.sock"
        assert not gone(grandchild), "the adopted server's helper is no stray"
        assert await sup.stop(handle, timeout=WAIT) is True
        await await_for(lambda: gone(grandchild), "the helper to be ended with its server")

    first, pid, grandchild = asyncio.run(older_daemon())
    asyncio.run(new_daemon(pid, grandchild))
    assert first.popen is not None
    first.popen.wait(WAIT)

"""No process is ever lost: servers that rename themselves (setproctitle), helpers that
double-fork into their own session, a daemon killed between spawn and record or at random
moments of restarts and deploys; and records that name what is not ours are never acted on.

Each test runs with cgroup tracking (root, a cgroup v2 hierarchy) and with the environment
tags a daemon without cgroups falls back to (RELMAN_CGROUPS=off).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import threading
import time
from pathlib import Path

import psutil
import pytest

from relman.supervisor.cgroups import CgroupTree
from testing.git import release_version
from testing.needs import need, need_root
from testing.tracked import TRACKED, app_procs, helpers, masters
from testing.waiting import wait_until
from tests.integration.test_supervision import root_of, serving

MODES = ["cgroup", "tags"]


def mode_env(mode: str) -> dict[str, str]:
    if mode == "cgroup":
        need_root("only root may create cgroups outside a delegated systemd unit")
        probe = CgroupTree.find("probe", Path("/nonexistent"))
        need(probe is not None, "no writable cgroup v2 hierarchy",
             "run on a host with cgroup v2")
        assert probe is not None
        probe.remove_base()
        return {}
    return {"RELMAN_CGROUPS": "off"}


def settled(app) -> dict:
    """Status once no job runs and the live server answers."""
    def ready():
        status = app.json("status")
        return status if status["job"] is None and status["live"] and serving(app, "v") \
            else None
    return wait_until(ready, timeout=60, what="the live release to serve, no job running")


def assert_one_server_per_instance(app) -> None:
    """Exactly one gunicorn master per instance status lists, and helpers of those only."""
    root = root_of(app)
    status = settled(app)
    instances = {s["instance"] for s in status["servers"]}
    wait_until(lambda: len(masters(root)) == len(instances), timeout=30,
               what=f"one master per instance ({instances})")
    assert {p.pid for p in masters(root)} == {s["pid"] for s in status["servers"]}
    for helper in helpers(root):
        with contextlib.suppress(psutil.Error):
            instance = helper.environ().get("RELMAN_UNIT")
            assert instance in instances, f"helper of {instance} left running"


def assert_stop_leaves_nothing(app) -> None:
    app.relman("stop", check=True)
    root = root_of(app)
    wait_until(lambda: not app_procs(root), timeout=30,
               what=f"no process left in the app root: {app_procs(root)}")


def deploy_tracked(app, app_repo, version: str = "v2") -> None:
    release_version(app_repo, version, extra=TRACKED)
    app.relman("deploy", version, check=True)
    root = root_of(app)
    wait_until(lambda: masters(root) and len(helpers(root)) >= 2, timeout=30,
               what="gunicorn renamed by setproctitle, and its helpers")


@pytest.mark.parametrize("mode", MODES)
def test_renamed_servers_and_helpers_survive_daemon_kills(make_app, app_repo, mode):
    """A server renamed by setproctitle is adopted by every restarted daemon, never started
    twice; a restart ends the old instance's double-forked helpers; stop leaves nothing."""
    env = mode_env(mode)
    app = make_app(start=False)
    app.start(env=env)
    deploy_tracked(app, app_repo)
    pid = masters(root_of(app))[0].pid
    for _ in range(5):
        app.kill9()
        app.start(env=env)
        assert_one_server_per_instance(app)
    assert [p.pid for p in masters(root_of(app))] == [pid]
    app.relman("restart", check=True)
    assert_one_server_per_instance(app)
    assert_stop_leaves_nothing(app)


@pytest.mark.parametrize("mode", MODES)
def test_daemon_killed_between_spawn_and_record(make_app, app_repo, mode):
    """A daemon killed right after spawning a server, before recording its pid: the next
    daemon finds that server (recorded before the spawn) and stops it; one server is left."""
    env = mode_env(mode)
    app = make_app(start=False)
    app.start(env=env)
    deploy_tracked(app, app_repo)
    app.kill9()
    app.start(env={**env, "RELMAN_TEST_CRASH_AT": "spawned"})
    app.relman("restart")
    assert app.proc is not None
    app.proc.wait(30)
    app.start(env=env)
    assert_one_server_per_instance(app)
    assert_stop_leaves_nothing(app)


@pytest.mark.parametrize(("mode", "kills"), [("cgroup", 20), ("tags", 8)])
def test_random_daemon_kills_during_restarts_and_deploys(make_app, app_repo, mode, kills):
    """SIGKILLs of the daemon at random moments of restarts and deploys: afterwards exactly
    one server runs per instance the daemon knows, and stop leaves no process."""
    env = mode_env(mode)
    seed = int(os.environ.get("RELMAN_TEST_SEED", time.time_ns() % 10**6))
    rng = random.Random(seed)
    print(f"seed {seed}")
    app = make_app(start=False)
    app.start(env=env)
    deploy_tracked(app, app_repo, "v2")
    release_version(app_repo, "v3", extra={**TRACKED, "VERSION": "v3\n"})
    for n in range(kills):
        job = ["restart"] if n % 2 == 0 else ["deploy", rng.choice(["v2", "v3"])]
        runner = threading.Thread(target=app.relman, args=job, daemon=True)
        runner.start()
        time.sleep(rng.uniform(0.05, 0.9))
        app.kill9()
        runner.join(60)
        app.start(env=env)
    assert_one_server_per_instance(app)
    assert_stop_leaves_nothing(app)


def test_records_naming_others_are_never_acted_on(make_app, base_dir):
    """Records that name another user's process, a process of ours without the instance's
    tags, or a path outside run/, and a plain pid as `uwsgi --pidfile` writes it: nothing
    is signalled or unlinked, the garbled file is set aside, and the live server stays."""
    need_root("starts a process as another user")
    app = make_app()
    app.relman("deploy", "v1", check=True)
    root = root_of(app)
    (live,) = app.json("status")["servers"]
    release = live["release"]
    app.kill9()
    ours = psutil.Popen(["sleep", "120"])
    theirs = psutil.Popen(["runuser", "-u", "nobody", "--", "sleep", "120"])
    theirs_child = wait_until(lambda: theirs.children() and theirs.children()[0],
                              timeout=10, what="nobody's sleep")
    victim = base_dir / "victim"
    victim.write_text("keep me")
    for n, proc in ((7, ours), (8, theirs_child)):
        record = {"instance": f"{release}.{n}", "release": release, "pid": proc.pid,
                  "create_time": proc.create_time(), "uid": proc.uids().real,
                  "cwd": proc.cwd(), "cgroup": "", "socket": str(victim),
                  "log": str(victim)}
        (root / "run" / f"{release}.{n}.pid").write_text(json.dumps(record))
    (root / "run" / f"{release}.9.pid").write_text(f"{live['pid']}\n")
    try:
        app.start()
        assert ours.is_running()
        assert ours.status() != psutil.STATUS_ZOMBIE
        assert theirs_child.is_running()
        assert victim.read_text() == "keep me"
        assert list((root / "run").glob(f"{release}.9.pid.corrupt-*"))
        assert app.json("status")["servers"][0]["pid"] == live["pid"]
        assert serving(app)
    finally:
        for proc in (ours, theirs_child, theirs):
            with contextlib.suppress(psutil.Error):
                proc.kill()

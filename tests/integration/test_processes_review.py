"""Review of issue 9: failure paths of restarts, stops and live checks with processes."""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from testing.daemon import RELMAN
from testing.git import release_version
from testing.waiting import wait_until
from tests.integration.test_processes import (
    events,
    left_in,
    make_worker_app,
    pids,
    release_of,
    running,
    worker,
)
from tests.integration.test_supervision import root_of, serving


def stored_command(app, release: str) -> list[str]:
    data = json.loads(app.relman("releases", "--json", "--settings", release,
                                 check=True).stdout)
    return data["settings"]["processes"]["worker"]["command"]


def break_worker_command(app) -> None:
    """Today's config: a worker command that exits at once (python: no such file)."""
    app.config.write_text(app.config.read_text().replace('"worker.py"', '"missing.py"'))


def test_a_failed_restart_puts_the_old_workers_and_settings_back(make_app):
    """`relman restart` with a config whose worker cannot start: it exits 1, and the live
    release runs as before: its workers (stop-first: started again with the settings they
    ran with) and the settings it carries."""
    app = make_worker_app(make_app)
    app.relman("deploy", "v1", check=True)
    v1 = release_of(app, "v1")
    break_worker_command(app)
    result = app.relman("restart")
    assert result.returncode == 1, result.stderr
    assert serving(app, "v1")
    wait_until(lambda: len(running(app)) == 2, timeout=15, what="the old workers again")
    assert stored_command(app, v1)[1] == "worker.py"


def test_a_failed_restart_of_one_type_puts_its_workers_back(make_app):
    """`relman restart worker` with a config whose worker cannot start: the stop-first
    workers it stopped run again, with the settings the release carried."""
    app = make_worker_app(make_app)
    app.relman("deploy", "v1", check=True)
    v1 = release_of(app, "v1")
    break_worker_command(app)
    result = app.relman("restart", "worker")
    assert result.returncode == 1, result.stderr
    wait_until(lambda: len(running(app)) == 2, timeout=15, what="the old workers again")
    assert stored_command(app, v1)[1] == "worker.py"


def test_stop_leaves_nothing_even_with_a_crash_restart_pending(make_app, app_repo):
    """A worker in crash-loop backoff when `relman stop` comes: its pending restart must
    not start it again after the stop."""
    app = make_worker_app(make_app, worker=worker(1, start_seconds=0.2))
    release_version(app_repo, "v1b", extra={"WORKER_EXIT_AFTER": "0.4"})
    app.relman("deploy", "v1b", check=True)

    def backing_off() -> bool:
        return any(e["event"] == "process_crashed" and e.get("delay", 0) >= 2
                   for e in app.json("history"))

    wait_until(backing_off, timeout=30, what="a restart 2 s or more away")
    app.relman("stop", check=True)
    stopped = time.time()
    assert app.json("ps")["instances"] == []
    time.sleep(3.5)  # the pending restart's delay, and its start
    assert not [e for e in events(app) if e[0] > stopped and e[1] == "started"]
    assert app.json("ps")["instances"] == []
    assert left_in(root_of(app) / "releases") == []


def test_live_checks_after_a_rollback_use_the_target_s_own_health_settings(make_app,
                                                                          app_repo):
    """v1 ran with health.path "/" (its /health fails); today's config checks /health. A
    rollback to v1 runs it with its own settings: its switch is verified with "/", and the
    live checks of its verify window must use "/" too, not roll it back by themselves."""
    app = make_app(health={"path": "/", "timeout": 30},
                   swap={"verify_window": 60, "live_check_interval": 0.2})
    (app_repo / "UNHEALTHY").write_text("")
    release_version(app_repo, "v1b")
    app.relman("deploy", "v1b", check=True)
    app.config.write_text(app.config.read_text().replace('path = "/"', 'path = "/health"'))
    (app_repo / "UNHEALTHY").unlink()
    release_version(app_repo, "v2")
    app.relman("deploy", "v2", check=True)
    app.relman("rollback", check=True)
    assert serving(app, "v1b")
    time.sleep(3)  # 15 live check intervals
    assert not [e for e in app.json("history") if e["event"] == "auto_rollback"]
    assert serving(app, "v1b")


def never_two(seen, name: str = "beat") -> bool:
    """No two instances of *name* ran at once (from their started/stopped events)."""
    running_now: set[int] = set()
    for _t, what, process, _i, _r, pid in seen:
        if process != name:
            continue
        if what == "started":
            running_now.add(pid)
            if len(running_now) > 1:
                return False
        elif what in ("stopped", "crashing", "failing"):
            running_now.discard(pid)
    return True


@pytest.mark.parametrize("step", ["healthy", "switched", "verified", "handed_over",
                                  "mid-stop"])
def test_daemon_killed_mid_handover_converges_to_the_live_release(make_app, app_repo,
                                                                  step):
    """kill -9 of the daemon around the handover: the next daemon runs the processes of
    the release that serves (app.sock), at their counts, and never two beats at once."""
    app = make_worker_app(make_app, beat=worker(1), worker=worker(2, handover="overlap"))
    (app_repo / "WORKER_STOP_DELAY").write_text("1")
    release_version(app_repo, "v1b")
    app.relman("deploy", "v1b", check=True)
    release_version(app_repo, "v2")
    before = pids(app) | pids(app, "beat")
    app.kill9()
    if step == "mid-stop":
        app.start()
        client = subprocess.Popen([*RELMAN, "--config", str(app.config), "deploy", "v2"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: any(e[1].startswith("signal") and e[2] == "beat"
                               for e in events(app)), timeout=60, what="the old beat stopping")
        app.kill9()
        client.wait(30)
    else:
        app.start(env={"RELMAN_TEST_CRASH_AT": step})
        app.relman("deploy", "v2")
        assert app.proc is not None
        app.proc.wait(30)
    app.start()
    version = "v1b" if step == "healthy" else "v2"  # past its switch, app.sock leads to v2
    live = release_of(app, version)
    assert serving(app, version)
    wait_until(lambda: {(i["process"], i["release"]) for i in app.json("ps")["instances"]
                        if i["process"] != "web"} == {("beat", live), ("worker", live)}
               and len(running(app)) == 2 and len(running(app, "beat")) == 1, timeout=30,
               what="the live release's processes only")
    time.sleep(1.5)
    assert never_two(events(app))
    if step == "healthy":  # never touched
        assert pids(app) | pids(app, "beat") == before
    assert app.json("status")["job"] is None


def test_a_failed_redeploy_of_a_rollback_target_keeps_its_settings(make_app, app_repo):
    """Deploying v1 again (reused as built) with a config whose worker cannot start fails,
    and must leave v1 as the rollback target it was: with the settings it ran with, so a
    rollback to it still works."""
    app = make_worker_app(make_app)
    app.relman("deploy", "v1", check=True)
    v1 = release_of(app, "v1")
    release_version(app_repo, "v2")
    app.relman("deploy", "v2", check=True)
    break_worker_command(app)
    result = app.relman("deploy", "v1")
    assert result.returncode == 1, result.stderr
    assert serving(app, "v2")
    assert stored_command(app, v1)[1] == "worker.py"
    app.relman("rollback", check=True)
    assert serving(app, "v1")
    assert len(running(app)) == 2


def test_a_redeploy_whose_server_fails_its_health_check_keeps_the_settings(make_app,
                                                                          app_repo):
    """The same with a config whose web server cannot start (fails before the switch)."""
    app = make_worker_app(make_app)
    app.relman("deploy", "v1", check=True)
    v1 = release_of(app, "v1")
    release_version(app_repo, "v2")
    app.relman("deploy", "v2", check=True)
    app.config.write_text(app.config.read_text().replace('"app:server"', '"nosuch:server"'))
    result = app.relman("deploy", "v1")
    assert result.returncode == 1, result.stderr
    data = json.loads(app.relman("releases", "--json", "--settings", v1, check=True).stdout)
    assert data["settings"]["server"]["app"] == "app:server"


def test_a_release_whose_worker_command_cannot_be_run_is_failed(make_app, app_repo):
    """A new release's worker whose program does not exist (exec fails at once) rolls the
    release back like one that exits: the release is marked failed, the old workers run."""
    app = make_worker_app(make_app)
    app.relman("deploy", "v1", check=True)
    app.config.write_text(app.config.read_text().replace('"python", "worker.py"',
                                                         '"no-such-program", "worker.py"'))
    release_version(app_repo, "v2")
    result = app.relman("deploy", "v2")
    assert result.returncode == 1, result.stderr
    assert serving(app, "v1")
    wait_until(lambda: len(running(app)) == 2, timeout=15, what="the old workers again")
    assert {r["ref"]: r["state"] for r in app.json("releases")}["v2"] == "failed"


def test_restart_of_one_type_records_only_what_it_applies(make_app):
    """`relman restart worker` applies today's [processes.worker] only: a [server] change
    in the file is neither recorded as the release's settings nor in the history (the web
    server still runs as before, and a crash restart of it must not pick it up)."""
    app = make_worker_app(make_app)
    app.relman("deploy", "v1", check=True)
    v1 = release_of(app, "v1")
    text = app.config.read_text().replace("workers = 1", "workers = 2")
    app.config.write_text(text.replace('"count": 2', '"count": 3').replace("count = 2",
                                                                           "count = 3"))
    app.relman("restart", "worker", check=True)
    assert len(running(app)) == 3
    changed = [e for e in app.json("history") if e["event"] == "settings_changed"]
    assert changed[-1]["changes"] == ["processes.worker.count 2 -> 3"]
    data = json.loads(app.relman("releases", "--json", "--settings", v1, check=True).stdout)
    assert data["settings"]["server"]["workers"] == 1

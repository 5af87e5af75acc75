"""A job that fails, for any reason, stops every process it started and leaves the links as
they were (run/app.sock, current, run/next.sock): the previous release serves on."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from pathlib import Path

import psutil
import pytest

from testing.git import release_version
from testing.waiting import wait_until
from tests.integration.test_supervision import root_of, serving

LINKS = ("run/app.sock", "current", "run/next.sock")


def links_of(root: Path) -> dict[str, str | None]:
    return {name: os.readlink(root / name) if (root / name).is_symlink() else None
            for name in LINKS}


def processes_of(root: Path, release: str) -> list[psutil.Process]:
    """Live processes running in *release*'s tree: its app server and workers."""
    tree = str((root / "releases" / release).resolve())
    found = []
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if proc.cwd() == tree and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
    return found


def release_id(app, ref: str) -> str:
    return next(r["id"] for r in app.json("releases") if r["ref"] == ref)


def assert_one_server_serving(app, version: str) -> None:
    status = app.json("status")
    assert status["job"] is None
    assert status["live"] == release_id(app, version)
    assert len(status["servers"]) == 1, status["servers"]
    assert serving(app, version)


@pytest.mark.parametrize("step", ["healthy", "switched", "verified", "drained"])
def test_a_swap_failing_after_the_health_gate_stops_its_candidate(make_app, app_repo, step):
    """A rollback whose next journal write is refused after its candidate passed the health
    gate (as on a full disk) exits 1 naming the file; the candidate's processes are gone, the
    links are as they were and v2 serves (after the switch too: it is undone); the next
    deploy works. Deploy, rollback and restart share this swap."""
    app = make_app(start=False)
    app.start(env={"RELMAN_TEST_FAIL_AT": f"rollback:{step}"})  # deploys are not affected
    root = root_of(app)
    app.relman("deploy", "v1", check=True)
    release_version(app_repo, "v2")
    app.relman("deploy", "v2", check=True)
    before = links_of(root)

    proc = app.relman("rollback")
    assert proc.returncode == 1, proc.stderr
    assert f"no space left on device ({root / 'state' / 'journal.json'})" in proc.stderr
    assert not processes_of(root, release_id(app, "v1"))
    assert links_of(root) == before, app.log_tail()
    assert_one_server_serving(app, "v2")

    release_version(app_repo, "v3")
    app.relman("deploy", "v3", check=True)
    assert_one_server_serving(app, "v3")


def test_a_rollback_failing_after_the_health_gate_stops_the_warm_server(make_app, app_repo):
    """A rollback to the warm previous release that fails once it took the warm server stops
    that server (it is nobody's any more) and leaves v2 live with the links as they were."""
    app = make_app(start=False, swap={"keep_warm": 60, "drain_timeout": 5, "stop_timeout": 5})
    app.start(env={"RELMAN_TEST_FAIL_AT": "rollback:healthy"})
    root = root_of(app)
    app.relman("deploy", "v1", check=True)
    release_version(app_repo, "v2")
    app.relman("deploy", "v2", check=True)
    v1 = release_id(app, "v1")
    assert processes_of(root, v1), "v1 is kept warm"
    assert len(app.json("status")["servers"]) == 2
    before = links_of(root)

    proc = app.relman("rollback")
    assert proc.returncode == 1, proc.stderr
    assert "no space left on device" in proc.stderr
    assert not processes_of(root, v1)
    assert links_of(root) == before
    assert_one_server_serving(app, "v2")


def test_a_real_failure_at_the_switch_puts_every_link_back(make_app, app_repo):
    """state/run.json is a directory, so the deploy fails for real (IsADirectoryError, a
    bug: exit 70) when the run record takes its healthy candidate, before any link moves:
    every link is as before, the candidate stops, v1 serves; with the directory gone the
    next deploy works. (Failures after the links moved: the RELMAN_TEST_FAIL_AT cases.)"""
    app = make_app()
    root = root_of(app)
    app.relman("deploy", "v1", check=True)
    release_version(app_repo, "v2")
    record = root / "state" / "run.json"
    record.unlink()
    record.mkdir()
    before = links_of(root)

    proc = app.relman("deploy", "v2")
    assert proc.returncode == 70, proc.stderr
    assert "internal error" in proc.stderr
    assert not processes_of(root, release_id(app, "v2"))
    assert links_of(root) == before, (app.log_tail(), app.relman("history").stdout)
    assert_one_server_serving(app, "v1")

    record.rmdir()
    app.relman("deploy", "v2", check=True)
    assert_one_server_serving(app, "v2")


def test_a_write_refused_once_the_old_server_is_retired_is_a_warning(make_app, app_repo):
    """Once the old server is stopped the swap is done: a journal write refused after that
    (as on a full disk) is a warning in the daemon's log; the rollback exits 0, v1 serves
    alone and no job is left in status."""
    app = make_app(start=False)
    app.start(env={"RELMAN_TEST_FAIL_AT": "rollback:stopped_old"})
    app.relman("deploy", "v1", check=True)
    release_version(app_repo, "v2")
    app.relman("deploy", "v2", check=True)
    proc = app.relman("rollback")
    assert proc.returncode == 0, proc.stderr
    assert_one_server_serving(app, "v1")
    assert "job.write_failed_after_swap" in app.log_tail()


def test_the_old_server_crashing_during_a_deploy_leaves_the_new_release_serving(
        make_app, app_repo):
    """v1's server is SIGKILLed while v2's boots: the deploy goes on and ends with exit 0,
    v2 serves, nothing is switched back to the dead server and one server runs. (The retire
    step used to drain the crashed server, failed, and put the links back to it: exit 70
    and 502s until v1 was restarted.)"""
    app = make_app()
    root = root_of(app)
    app.relman("deploy", "v1", check=True)
    (old,) = [s["pid"] for s in app.json("status")["servers"]]
    release_version(app_repo, "v2", extra={"BOOT_DELAY": "3\n"})
    results = []
    deploy = threading.Thread(target=lambda: results.append(app.relman("deploy", "v2")))
    deploy.start()
    wait_until(lambda: (job := app.json("status")["job"]) and job["step"] == "released",
               timeout=120, what="v2's server to boot")
    os.killpg(old, signal.SIGKILL)
    deploy.join(180)
    (proc,) = results
    assert proc.returncode == 0, (proc.stdout, proc.stderr, app.log_tail())
    wait_until(lambda: app.json("status")["job"] is None, timeout=60, what="queued jobs")
    assert_one_server_serving(app, "v2")
    assert os.readlink(root / "run/app.sock").startswith(release_id(app, "v2"))

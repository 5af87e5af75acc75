"""Pitfalls of other deploy tools (../shared/ANCHORS.md) that the rest of the suite does not
pin on its own, each against real processes."""

from __future__ import annotations

import os
import subprocess
import threading
import urllib.request
from pathlib import Path
from typing import Any

import psutil
import pytest

from testing.daemon import RELMAN
from testing.git import release_version
from testing.waiting import pid_gone, wait_until
from tests.integration.test_supervision import live_pid, root_of, serving


def _slow_through(url: str, result: dict[str, Any]) -> None:
    try:
        with urllib.request.urlopen(url, timeout=60) as reply:
            result["status"], result["body"] = reply.status, reply.read().decode()
    except OSError as e:  # reported by the assertion, not lost in a thread (HTTPError too)
        result["error"] = repr(e)


@pytest.mark.parametrize("job", ["deploy", "restart"])
@pytest.mark.parametrize("kind", ["gunicorn", "uwsgi"])
def test_a_long_request_in_flight_is_answered_by_the_old_server(stack, app_repo, kind, job):
    """A 3 s request that the live server is in the middle of when a swap starts is
    answered in full, through nginx, by that server; then it exits by itself, not by
    SIGKILL (uWSGI's plain SIGTERM would drop the request; the graceful hook does not)."""
    app, nginx = stack(kind, swap={"drain_timeout": 10, "stop_timeout": 30})
    app.relman("deploy", "v1", check=True)
    (v1,) = (r["id"] for r in app.json("releases"))
    old = live_pid(app)
    old_workers = {p.pid for p in psutil.Process(old).children(recursive=True)}
    result: dict[str, Any] = {}
    mark = f"slow-request-{kind}-{job}"
    slow = threading.Thread(target=_slow_through,
                            args=(f"{nginx.url}/slow?ms=3000&mark={mark}", result))
    slow.start()
    log = root_of(app) / "log" / f"{v1}.log"
    wait_until(lambda: mark in log.read_text(errors="replace"), timeout=30,
               what="the slow request to reach a worker")
    if job == "deploy":
        release_version(app_repo, "v2")
        app.relman("deploy", "v2", check=True)
    else:
        app.relman("restart", check=True)
    slow.join(60)
    assert "error" not in result, result
    assert result["status"] == 200
    assert result["body"].startswith("sample v1")
    assert int(result["body"].split(" pid ")[1].split()[0]) in old_workers
    assert live_pid(app) != old
    assert pid_gone(old)
    assert f"pid={old} graceful=True" in app.log_tail(400)


def test_a_second_daemon_for_the_same_app_refuses_to_start(make_app):
    """Two daemons would both supervise (and restart) the same servers: the second one
    exits 4 naming the first, and the first one's servers are untouched."""
    app = make_app()
    app.relman("deploy", "v1", check=True)
    pid = live_pid(app)
    second = subprocess.run([*RELMAN, "--config", str(app.config), "daemon"],
                            capture_output=True, text=True, timeout=60, env=app.env)
    assert second.returncode == 4, second.stderr
    assert f"another relman daemon runs for this app (pid {app.proc.pid})" in second.stderr
    assert "Traceback" not in second.stderr
    assert len(second.stderr.strip().splitlines()) <= 2
    assert live_pid(app) == pid
    assert serving(app, "v1")


def test_deploys_started_together_run_one_at_a_time(make_app):
    """Five deploys at once: one runs; each of the others exits 4 naming the holder, and
    nothing of theirs is half-done (no check-then-write race on the lock)."""
    app = make_app(build={"commands": ["sleep 2"]})
    procs = [subprocess.Popen([*RELMAN, "--config", str(app.config), "deploy", "v1"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=app.env) for _ in range(5)]
    results = [(p.wait(120), p.stderr.read() if p.stderr else "") for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 4, 4, 4, 4], results
    for code, err in results:
        if code == 4:
            assert "deploy v1" in err
            assert "since" in err
    assert [r["state"] for r in app.json("releases")] == ["built"]
    assert serving(app, "v1")


def test_the_server_runs_from_its_release_not_from_current(make_app, app_repo):
    """A server started in `current` keeps running old code after the link moves
    (Capistrano's classic): each server's cwd is its own resolved release directory."""
    app = make_app()
    app.relman("deploy", "v1", check=True)
    release_version(app_repo, "v2")
    app.relman("deploy", "v2", check=True)
    root = root_of(app)
    live = app.json("status")["live"]
    server = psutil.Process(live_pid(app))
    expected = str((root / "releases" / live).resolve())
    assert server.cwd() == expected
    assert all(w.cwd() == expected for w in server.children(recursive=True))
    assert "current" not in " ".join(server.cmdline())


def test_an_unchanged_dependency_list_is_not_installed_again(make_app, app_repo):
    """The second deploy with the same requirements does no dependency work: no installer
    runs and the venv is not touched."""
    app = make_app()
    app.relman("deploy", "v1", check=True)
    (first,) = app.json("releases")
    venv = Path(first["venv"])
    marker = venv / ".relman-complete"
    before = (marker.stat().st_mtime_ns, venv.stat().st_mtime_ns)
    release_version(app_repo, "v2")
    out = app.relman("deploy", "v2", check=True).stdout
    assert f"virtualenv {venv.name} reused" in out
    for word in ("Installing", "Installed", "Resolved", "Collecting", "building virtualenv"):
        assert word not in out, out
    assert (marker.stat().st_mtime_ns, venv.stat().st_mtime_ns) == before
    assert app.json("releases")[1]["venv"] == str(venv)


def test_rollback_skips_a_failed_release_whatever_its_mtime(make_app, app_repo):
    """v1 good, v2 live, v3 failed its health gate with the newest directory on disk:
    `rollback` goes to v1 (tools that take the newest other directory would take v3)."""
    app = make_app(health={"path": "/health", "timeout": 3})
    app.relman("deploy", "v1", check=True)
    release_version(app_repo, "v2")
    app.relman("deploy", "v2", check=True)
    release_version(app_repo, "v3", extra={"FAIL_IMPORT": "yes\n"})
    assert app.relman("deploy", "v3").returncode == 1
    v1, v2, v3 = (r["id"] for r in app.json("releases"))
    assert [r["state"] for r in app.json("releases")] == ["built", "built", "failed"]
    v3_dir = root_of(app) / "releases" / v3
    v3_dir.mkdir(exist_ok=True)
    os.utime(v3_dir)  # the newest directory
    app.relman("rollback", check=True)
    assert app.json("status")["live"] == v1
    assert serving(app, "v1")
    refused = app.relman("rollback", v3)
    assert refused.returncode == 1
    assert f"release {v3} is failed: not a target" in refused.stderr
    assert v2 != v1

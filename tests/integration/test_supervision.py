"""Supervision that survives crashes: restarts, adoption, journaled recovery (issue 4)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import psutil
import pytest

from testing.daemon import RELMAN
from testing.git import release_version
from testing.load import Load
from testing.waiting import pid_gone, wait_until
from tests.integration.test_deploy import get


def root_of(app) -> Path:
    return Path(app.config.with_suffix(""))


def live_pid(app) -> int | None:
    status = app.json("status")
    return next((s["pid"] for s in status["servers"] if s["live"]), None)


def serving(app, version: str = "v1") -> bool:
    try:
        return get(root_of(app) / "run/app.sock").startswith(f"sample {version}")
    except (OSError, ValueError, AssertionError):
        return False


def test_sigkilled_server_comes_back(make_app):
    """A SIGKILLed app server is serving again without a deploy, and history says so."""
    app = make_app()
    app.relman("deploy", "v1", check=True)
    old = live_pid(app)
    (before,) = app.json("status")["servers"]
    os.killpg(old, signal.SIGKILL)
    wait_until(lambda: live_pid(app) not in (None, old), timeout=30, what="a new live pid")
    assert serving(app)
    events = [e["event"] for e in app.json("history")]
    assert "server_crashed" in events
    assert "server_restarted" in events
    (after,) = app.json("status")["servers"]
    assert after["instance"] != before["instance"], "every generation gets its own socket"


def test_policy_never_does_not_restart(make_app):
    """With restart.policy = "never" a crashed server stays down."""
    app = make_app(restart={"policy": "never"})
    app.relman("deploy", "v1", check=True)
    os.killpg(live_pid(app), signal.SIGKILL)
    wait_until(lambda: any(e["event"] == "server_crashed" for e in app.json("history")),
               timeout=20, what="the crash to be recorded")
    time.sleep(1.5)
    assert live_pid(app) is None


def test_crash_loop_after_switch_rolls_back(make_app, app_repo):
    """A release whose server keeps dying right after its switch is rolled back by itself to
    the previous known-good release, and status reports the crash loop."""
    app = make_app(restart={"policy": "always", "backoff_max": 1})
    app.relman("deploy", "v1", check=True)
    release_version(app_repo, "v2")
    app.relman("deploy", "v2", check=True)
    v1 = app.json("releases")[0]["id"]
    for _ in range(3):
        pid = wait_until(lambda: live_pid(app), timeout=30, what="a live server")
        os.killpg(pid, signal.SIGKILL)
        wait_until(lambda p=pid: live_pid(app) != p, timeout=30, what="the exit to be seen")
    wait_until(lambda: app.json("status")["live"] == v1, timeout=60, what="auto-rollback")
    assert serving(app, "v1")
    events = [e["event"] for e in app.json("history")]
    assert "crash_loop" in events
    assert "auto_rollback" in events
    wait_until(lambda: app.json("releases")[1]["state"] == "failed", timeout=30,
               what="the release to be marked failed")
    assert "crash-looped" in app.json("releases")[1]["error"]


def test_failing_live_check_after_switch_rolls_back(make_app, app_repo):
    """A release that passes its health gate, then fails health.path three times in a row
    within swap.verify_window, is rolled back by itself, marked failed, stopped (even with
    keep_warm) and never a target."""
    app = make_app(swap={"live_check_interval": 0.3, "verify_window": 60, "keep_warm": 60,
                         "drain_timeout": 5, "stop_timeout": 5})
    app.relman("deploy", "v1", check=True)
    release_version(app_repo, "v2", extra={"UNHEALTHY_AFTER": "1.5\n"})
    app.relman("deploy", "v2", check=True)
    v1, v2 = (r["id"] for r in app.json("releases"))
    wait_until(lambda: app.json("status")["live"] == v1, timeout=60, what="auto-rollback")
    assert serving(app, "v1")
    rolled = [e for e in app.json("history") if e["event"] == "auto_rollback"]
    assert len(rolled) == 1
    assert "failed its live check 3 times in a row" in rolled[0]["reason"]
    assert rolled[0]["previous"] == v2
    # marked failed once the rollback away from it has finished (drain and stop included)
    wait_until(lambda: app.json("releases")[1]["state"] == "failed", timeout=30,
               what="the release to be marked failed")
    wait_until(lambda: [s["release"] for s in app.json("status")["servers"]] == [v1],
               timeout=30, what="the failed release to be stopped, not kept warm")
    refused = app.relman("rollback", v2)
    assert refused.returncode == 1, refused.stderr
    assert f"release {v2} is failed: not a target" in refused.stderr


def test_live_check_outside_the_window_does_not_roll_back(make_app, app_repo):
    """Past swap.verify_window a failing health check is the operator's to act on: the
    release stays live (relman never flips releases on its own long after a deploy)."""
    app = make_app(swap={"live_check_interval": 0.3, "verify_window": 1,
                         "drain_timeout": 5, "stop_timeout": 5})
    app.relman("deploy", "v1", check=True)
    release_version(app_repo, "v2", extra={"UNHEALTHY_AFTER": "2\n"})
    app.relman("deploy", "v2", check=True)
    v2 = app.json("releases")[1]["id"]
    time.sleep(4)
    assert app.json("status")["live"] == v2
    assert not any(e["event"] == "auto_rollback" for e in app.json("history"))


def test_daemon_sigkill_does_not_interrupt_serving_and_is_adopted(make_app):
    """kill -9 of the daemon leaves the app serving; the next daemon adopts the same
    process instead of starting a second copy."""
    app = make_app()
    app.relman("deploy", "v1", check=True)
    pid = live_pid(app)
    app.kill9()
    assert serving(app)
    app.start()
    assert live_pid(app) == pid
    assert serving(app)
    os.killpg(pid, signal.SIGKILL)  # and it is watched as before
    wait_until(lambda: live_pid(app) not in (None, pid), timeout=30, what="a restart")


def test_stale_pidfile_is_never_signalled(make_app):
    """A pidfile whose pid belongs to another process is stale: that process survives and
    the live release is started again."""
    app = make_app()
    app.relman("deploy", "v1", check=True)
    root = root_of(app)
    pid = live_pid(app)
    app.kill9()
    os.killpg(pid, signal.SIGKILL)
    wait_until(lambda: pid_gone(pid), timeout=10)
    (pidfile,) = root.glob("run/*.pid")
    data = json.loads(pidfile.read_text())
    bystander = psutil.Popen(["sleep", "60"])
    data["pid"] = bystander.pid  # a pid that now belongs to somebody else
    pidfile.write_text(json.dumps(data))
    try:
        app.start()
        assert bystander.is_running()
        assert bystander.status() != psutil.STATUS_ZOMBIE
        wait_until(lambda: serving(app), timeout=30, what="the live release to serve again")
    finally:
        bystander.kill()


STEPS = ["fetched", "built", "released", "healthy", "previewed", "switched", "verified",
         "drained", "stopped_old"]


@pytest.mark.parametrize("step", STEPS)
def test_daemon_killed_at_each_step_recovers(stack, app_repo, step):
    """kill -9 of the daemon right after any deploy step: the site serves throughout (a load
    through nginx across the crash and the recovery sees no failed request), the lock is
    free, no orphan server remains, and the next deploy works."""
    app, nginx = stack("gunicorn")
    app.relman("deploy", "v1", check=True)
    release_version(app_repo, "v2")
    with Load(nginx.url, ("/slow?ms=20", "/"), concurrency=4, max_seconds=120) as load:
        app.kill9()  # a daemon with the fault hook adopts the site, which stays up
        app.start(env={"RELMAN_TEST_CRASH_AT": step})
        app.relman("deploy", "v2")
        app.proc.wait(30)
        version = "v2" if step in STEPS[STEPS.index("switched"):] else "v1"
        assert serving(app, version), f"the site must serve {version} while no daemon runs"
        app.start()
        assert serving(app, version)
        time.sleep(0.3)
    assert load.result.sent > 20
    assert load.result.failed == 0, (load.result.statuses, load.result.errors)
    status = app.json("status")
    assert status["job"] is None
    assert len(status["servers"]) == 1, status["servers"]
    assert not any(e for e in app.json("releases") if e["state"] == "unfinished")
    release_version(app_repo, "v3")
    app.relman("deploy", "v3", check=True)
    assert serving(app, "v3")


def test_interrupted_build_is_cleaned_up(make_app, app_repo):
    """kill -9 during a build command: the build's processes die, the half-built release is
    marked failed and removed, and it never counts as a rollback target."""
    app = make_app(build={"commands": ["sleep 30"]})
    import subprocess
    import sys

    client = subprocess.Popen([sys.executable, "-m", "relman", "--config", str(app.config),
                               "deploy", "v1"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    sleeper = wait_until(lambda: next((p for p in psutil.process_iter(["cmdline"])
                                       if p.info["cmdline"] == ["sleep", "30"]), None),
                         timeout=30, what="the build command")
    app.kill9()
    client.wait(10)
    app.start()
    wait_until(lambda: not sleeper.is_running() or sleeper.status() == psutil.STATUS_ZOMBIE,
               timeout=10, what="the build command to be killed")
    (release,) = app.json("releases")
    assert release["state"] == "failed"
    assert not (root_of(app) / "releases" / release["id"]).exists()
    assert any(e["event"] == "job_interrupted" for e in app.json("history"))


def test_sd_notify_ready_status_watchdog_reload_stopping(make_app, base_dir):
    """The daemon tells systemd READY=1, STATUS=, WATCHDOG=1, RELOADING=1 and STOPPING=1."""
    path = base_dir / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0.5)
    messages: list[str] = []

    def receive() -> None:  # as systemd does: read every datagram as it comes
        while True:
            try:
                messages.append(sock.recv(4096).decode())
            except TimeoutError:
                if stopped.is_set():
                    return

    stopped = threading.Event()
    reader = threading.Thread(target=receive, daemon=True)
    reader.start()
    app = make_app(start=False)
    app.start(env={"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "200000"})
    app.relman("deploy", "v1", check=True)
    app.proc.send_signal(signal.SIGHUP)
    time.sleep(0.5)
    app.stop()
    stopped.set()
    reader.join(5)
    sock.close()
    text = "\n".join(messages)
    assert "READY=1" in text
    assert "STATUS=" in text
    assert messages.count("WATCHDOG=1") >= 2
    assert "RELOADING=1" in text
    assert "STOPPING=1" in text
    assert any("live" in m for m in messages if m.startswith("STATUS="))


def test_config_change_is_reloaded_and_bad_config_kept_out(make_app):
    """A changed config file is reloaded; an invalid one is logged and the old one kept."""
    app = make_app()
    app.relman("deploy", "v1", check=True)
    text = app.config.read_text()
    app.config.write_text(text + "\n[swap]\nkeep_warm = 7\n")
    wait_until(lambda: "config.reloaded" in app.log_tail(200), timeout=10,
               what="the reload")
    app.config.write_text(text + "\n[swap]\nbogus = 1\n")
    # Wait for the error about the whole file: the watcher may also see it empty, half-written.
    wait_until(lambda: "swap.bogus" in app.log_tail(200), timeout=10,
               what="the rejected reload")
    assert "config.reload_failed" in app.log_tail(200)
    assert app.proc.poll() is None, "the daemon keeps running on the last good config"
    assert serving(app)


def test_external_flip_of_current_triggers_a_swap(make_app, app_repo):
    """A Capistrano-style flip of `current` to another release leads to a health-gated swap."""
    app = make_app()
    app.relman("deploy", "v1", check=True)
    release_version(app_repo, "v2")
    app.relman("deploy", "v2", check=True)
    v1 = app.json("releases")[0]["id"]
    root = root_of(app)
    tmp = root / "current.tmp"
    os.symlink(f"releases/{v1}", tmp)
    os.replace(tmp, root / "current")
    wait_until(lambda: serving(app, "v1"), timeout=30, what="the swap to v1")
    assert app.json("status")["live"] == v1


def test_current_rewritten_to_the_same_release_is_no_flip(make_app):
    """An event for `current` that names the release relman linked (its own switch, seen
    late) starts nothing, even while the live server is down (restart.policy = "never")."""
    app = make_app(restart={"policy": "never"})
    app.relman("deploy", "v1", check=True)
    v1 = app.json("releases")[0]["id"]
    os.killpg(live_pid(app), signal.SIGKILL)
    wait_until(lambda: any(e["event"] == "server_crashed" for e in app.json("history")),
               timeout=20, what="the crash to be recorded")
    root = root_of(app)
    tmp = root / "current.tmp"
    os.symlink(f"releases/{v1}", tmp)
    os.replace(tmp, root / "current")
    time.sleep(2)  # four times the watcher's step and debounce
    assert live_pid(app) is None
    assert "current.flipped_externally" not in app.log_tail(200)


def test_status_shows_process_figures(make_app):
    """status gives per-process RSS, CPU, uptime and worker count, and the daemon's own."""
    app = make_app(server={"kind": "gunicorn", "app": "app:server", "workers": 3})
    app.relman("deploy", "v1", check=True)
    # The health gate passes once one worker answers; gunicorn forks the others meanwhile.
    wait_until(
        lambda: app.json("status")["servers"][0]["workers"] == 3,
        timeout=30,
        what="gunicorn's three workers",
    )
    status = app.json("status")
    (server,) = status["servers"]
    assert server["workers"] == 3
    assert server["rss"] > 0
    assert server["uptime"] >= 0
    assert "cpu_percent" in server
    assert status["daemon"]["rss"] > 0
    human = app.relman("status", check=True).stdout
    assert "workers 3" in human


def test_restarted_daemon_adopts_the_warm_previous_release(make_app, app_repo):
    """kill -9 of the daemon while the previous release is kept warm: the next daemon adopts
    both servers (no second copy), keeps the old one warm, and a rollback is a switch only."""
    app = make_app(swap={"keep_warm": 60, "drain_timeout": 5, "stop_timeout": 5})
    app.relman("deploy", "v1", check=True)
    v1_pid = live_pid(app)
    release_version(app_repo, "v2")
    app.relman("deploy", "v2", check=True)
    v2_pid = live_pid(app)
    app.kill9()
    app.start()
    servers = {s["pid"]: s["state"] for s in app.json("status")["servers"]}
    assert servers == {v1_pid: "warm", v2_pid: "live"}
    assert "keeping" in app.log_tail(200)
    rollback = app.relman("rollback", check=True)
    assert "still warm: switching without a restart" in rollback.stdout
    assert live_pid(app) == v1_pid
    assert serving(app, "v1")


def test_a_flip_of_current_during_a_job_is_followed_after_it(make_app, app_repo):
    """An external flip while a deploy runs (and then fails, so relman does not rewrite
    `current`) is not lost: once the job ends, the daemon swaps to the flipped release."""
    fail_v3 = ("python -c \"import time; v = open('VERSION').read().strip(); "
               "time.sleep(3 if v == 'v3' else 0); raise SystemExit(v == 'v3')\"")
    app = make_app(build={"commands": [fail_v3]})
    app.relman("deploy", "v1", check=True)
    release_version(app_repo, "v2")
    app.relman("deploy", "v2", check=True)
    v1 = app.json("releases")[0]["id"]
    release_version(app_repo, "v3")
    deploy = subprocess.Popen([*RELMAN, "--config", str(app.config), "deploy", "v3"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=app.env)
    wait_until(lambda: app.json("status")["job"] is not None, timeout=30,
               what="the deploy to start")
    root = root_of(app)
    tmp = root / "current.tmp"
    os.symlink(f"releases/{v1}", tmp)
    os.replace(tmp, root / "current")
    assert deploy.wait(60) == 1
    wait_until(lambda: serving(app, "v1"), timeout=30, what="the swap to v1 after the job")
    assert app.json("status")["live"] == v1


@pytest.mark.parametrize("target", ["unknown", "failed"])
def test_a_flip_to_a_release_that_cannot_serve_is_refused_once(make_app, app_repo, target):
    """`current` flipped to something no swap can reach (no such release, a failed one): one
    attempt, `current` goes back to the live release (history says why), no retry loop, and
    deploys go on as usual."""
    app = make_app(health={"path": "/health", "timeout": 3})
    app.relman("deploy", "v1", check=True)
    root = root_of(app)
    if target == "unknown":
        bogus = "20990101T000000Z-deadbee"
        (root / "releases" / bogus).mkdir()
    else:
        release_version(app_repo, "v2", extra={"FAIL_IMPORT": "yes\n"})
        assert app.relman("deploy", "v2").returncode == 1
        bogus = app.json("releases")[1]["id"]
        (root / "releases" / bogus).mkdir(exist_ok=True)
    v1 = app.json("releases")[0]["id"]
    tmp = root / "current.tmp"
    os.symlink(f"releases/{bogus}", tmp)
    os.replace(tmp, root / "current")
    wait_until(lambda: any(e["event"] == "flip_refused" for e in app.json("history")),
               timeout=30, what="the flip to be refused")
    wait_until(lambda: (root / "current").resolve().name == v1, timeout=10,
               what="current back on the live release")
    time.sleep(1.5)  # three watcher steps: a loop would have run many jobs by now
    assert app.log_tail(400).count("current.flipped_externally") == 1
    assert serving(app, "v1")
    (app_repo / "FAIL_IMPORT").unlink(missing_ok=True)
    release_version(app_repo, "v3")
    app.relman("deploy", "v3", check=True)
    assert serving(app, "v3")

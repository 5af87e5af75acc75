"""[processes.NAME] (issue 9): real worker processes beside the web server, handed over on
deploy and rollback, supervised, scaled, restarted and stopped by a real daemon."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
from pathlib import Path
from typing import Any

import psutil
import pytest

from testing.git import release_version
from testing.waiting import wait_until
from tests.integration.test_supervision import root_of, serving


def worker(count: int = 2, **extra: Any) -> dict[str, Any]:
    return {"command": ["python", "worker.py", "{root}/shared/events"], "count": count,
            "stop_timeout": 10, "start_seconds": 0.5, **extra}


def make_worker_app(make_app, **processes: dict[str, Any]):
    return make_app(processes=processes or {"worker": worker()},
                    server={"kind": "gunicorn", "app": "app:server", "workers": 1})


def events(app) -> list[tuple[float, str, str, int, str, int]]:
    """(time, event, process, index, release, pid) of every worker event, in order."""
    path = root_of(app) / "shared" / "events"
    found = []
    for line in path.read_text().splitlines() if path.exists() else []:
        stamp, *what, process, index, release, pid = line.split()
        found.append((float(stamp), " ".join(what), process, int(index), release, int(pid)))
    return found


def running(app, name: str = "worker") -> list[dict[str, Any]]:
    return [i for i in app.json("ps")["instances"] if i["process"] == name]


def pids(app, name: str = "worker") -> set[int]:
    return {i["pid"] for i in running(app, name)}


def release_of(app, ref: str) -> str:
    return next(r["id"] for r in app.json("releases") if r["ref"] == ref)


def left_in(base: Path) -> list[psutil.Process]:
    """Processes still running in the app root (workers, grandchildren)."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.cwd().startswith(str(base)) and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except psutil.Error:
            continue
    return found


def test_deploy_starts_every_process_in_the_release_environment(make_app):
    """Each instance runs in the release directory with the venv first on PATH, server.env,
    RELMAN_RELEASE/PROCESS/INSTANCE, and its output in log/<id>.<name>.log; ps lists the
    web server and every instance."""
    app = make_app(processes={"worker": worker(2), "beat": worker(1)},
                   server={"kind": "gunicorn", "app": "app:server", "workers": 1,
                           "env": {"SAMPLE_SETTING": "on"}})
    app.relman("deploy", "v1", check=True)
    v1 = release_of(app, "v1")
    ps = app.json("ps")
    assert [(i["process"], i["index"]) for i in ps["instances"]] == [
        ("web", 1), ("beat", 1), ("worker", 1), ("worker", 2)]
    assert {(c["name"], c["wanted"], c["running"]) for c in ps["counts"]} == {
        ("worker", 2, 2), ("beat", 1, 1)}
    release_dir = (root_of(app) / "releases" / v1).resolve()
    for line in ps["instances"][1:]:
        proc = psutil.Process(line["pid"])
        env = proc.environ()
        assert proc.cwd() == str(release_dir)
        assert env["RELMAN_RELEASE"] == v1
        assert (env["RELMAN_PROCESS"], env["RELMAN_INSTANCE"]) == (line["process"],
                                                                   str(line["index"]))
        assert env["SAMPLE_SETTING"] == "on"
        assert env["PATH"].split(":")[0].endswith("/bin")
        assert "venvs" in env["PATH"]
    wait_until(lambda: len([e for e in events(app) if e[1] == "started"]) == 3)
    log = root_of(app) / "log" / f"{v1}.worker.log"
    assert "started worker 1" in log.read_text()
    assert "started worker 2" in log.read_text()
    text = app.relman("ps", check=True).stdout
    assert "worker" in text
    assert "beat" in text
    assert "web" in text


def test_stop_first_handover_stops_every_old_worker_before_a_new_one_starts(make_app,
                                                                            app_repo):
    """stop-first: the old workers finish their task and exit before any new one starts;
    the web switch came first."""
    app = make_worker_app(make_app)
    (app_repo / "WORKER_STOP_DELAY").write_text("0.5")
    release_version(app_repo, "v1b")
    app.relman("deploy", "v1b", check=True)
    old = release_of(app, "v1b")
    release_version(app_repo, "v2")
    app.relman("deploy", "v2", check=True)
    new = release_of(app, "v2")
    seen = events(app)
    last_old_stop = max(t for t, e, _p, _i, r, _pid in seen if r == old and e == "stopped")
    first_new = min(t for t, e, _p, _i, r, _pid in seen if r == new and e == "started")
    assert last_old_stop < first_new
    assert len([e for e in seen if e[4] == old and e[1] == "task_finished"]) == 2
    assert serving(app, "v2")
    assert {i["release"] for i in running(app)} == {new}


def test_overlap_handover_starts_new_workers_before_the_old_stop(make_app, app_repo):
    """overlap: the new instances are up start_seconds before the old ones get their
    stop signal."""
    app = make_worker_app(make_app, worker=worker(2, handover="overlap", start_seconds=1))
    app.relman("deploy", "v1", check=True)
    old = release_of(app, "v1")
    release_version(app_repo, "v2")
    app.relman("deploy", "v2", check=True)
    new = release_of(app, "v2")
    seen = events(app)
    last_new_start = max(t for t, e, _p, _i, r, _pid in seen if r == new and e == "started")
    first_old_signal = min(t for t, e, _p, _i, r, _pid in seen
                           if r == old and e.startswith("signal"))
    assert last_new_start < first_old_signal  # (how long before: bench/processes.py)
    assert {i["release"] for i in running(app)} == {new}


@pytest.mark.parametrize("handover", ["stop-first", "overlap"])
def test_a_worker_that_does_not_stay_up_rolls_the_whole_release_back(make_app, app_repo,
                                                                     handover):
    """A new instance that exits before start_seconds: the deploy exits 1 with its last log
    lines, the web switches back, the old workers run again, the release is failed."""
    app = make_worker_app(make_app, worker=worker(2, handover=handover))
    app.relman("deploy", "v1", check=True)
    v1 = release_of(app, "v1")
    release_version(app_repo, "v2", extra={"WORKER_FAIL": ""})
    result = app.relman("deploy", "v2")
    assert result.returncode == 1, result.stderr
    assert "process worker" in result.stderr
    assert "failing worker" in result.stderr
    assert "Traceback" not in result.stderr
    assert serving(app, "v1")
    wait_until(lambda: {i["release"] for i in running(app)} == {v1} and len(running(app)) == 2)
    states = {r["ref"]: r["state"] for r in app.json("releases")}
    assert states["v2"] == "failed"
    if handover == "overlap":  # never stopped
        assert not [e for e in events(app) if e[4] == v1 and e[1].startswith("signal")]


def test_a_worker_that_ignores_its_stop_signal_is_killed_and_recorded(make_app, app_repo,
                                                                      base_dir):
    app = make_worker_app(make_app, worker=worker(1, stop_timeout=1, stop_signal="INT"))
    (app_repo / "WORKER_IGNORE_STOP").write_text("")
    (app_repo / "WORKER_GRANDCHILD").write_text("")
    release_version(app_repo, "v1b")
    app.relman("deploy", "v1b", check=True)
    root = root_of(app)
    wait_until(lambda: any("relman-test-grandchild" in " ".join(p.cmdline())
                           for p in left_in(root / "releases")))
    app.relman("stop", check=True)
    assert left_in(root / "releases") == []
    killed = [e for e in app.json("history") if e["event"] == "process_killed"]
    assert killed
    assert killed[0]["process"] == "worker"


def test_a_killed_worker_is_replaced_and_adopted_after_a_daemon_restart(make_app):
    app = make_worker_app(make_app)
    app.relman("deploy", "v1", check=True)
    before = pids(app)
    victim = min(before)
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: len(pids(app)) == 2 and victim not in pids(app), timeout=15)
    # Counted once it stayed up its start_seconds.
    wait_until(lambda: [i["restarts"] for i in running(app)] in ([0, 1], [1, 0]))
    now = pids(app)
    app.kill9()
    app.start()
    assert pids(app) == now  # adopted, not restarted
    assert serving(app, "v1")


def test_scale_is_kept_across_deploys_rollbacks_and_daemon_restarts(make_app, app_repo):
    app = make_worker_app(make_app)
    app.relman("deploy", "v1", check=True)
    app.relman("scale", "worker=3", check=True)
    assert len(running(app)) == 3
    release_version(app_repo, "v2")
    app.relman("deploy", "v2", check=True)
    assert len(running(app)) == 3
    app.relman("rollback", check=True)
    assert len(running(app)) == 3
    app.kill9()
    app.start()
    assert len(running(app)) == 3
    app.relman("scale", "worker=0", check=True)
    assert running(app) == []
    app.relman("scale", "--reset", check=True)
    assert len(running(app)) == 2
    assert [c["scaled"] for c in app.json("ps")["counts"]] == [False]


@pytest.mark.parametrize("args", [("nosuch=2",), ("worker=-1",), ("worker",), ("web=2",),
                                  ()])
def test_bad_scale_exits_2(make_app, args):
    app = make_worker_app(make_app)
    app.relman("deploy", "v1", check=True)
    result = app.relman("scale", *args)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("relman: error:") or "Usage" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(running(app)) == 2


def test_restart_of_an_overlap_type_rolls_one_instance_at_a_time(make_app):
    app = make_worker_app(make_app, worker=worker(2, handover="overlap", start_seconds=0.3))
    app.relman("deploy", "v1", check=True)
    old = pids(app)
    web = running(app, "web")[0]["pid"]
    app.relman("restart", "worker", check=True)
    assert pids(app).isdisjoint(old)
    assert len(pids(app)) == 2
    assert running(app, "web")[0]["pid"] == web  # only the workers
    order = [(e, pid in old) for _t, e, _p, _i, _r, pid in events(app)
             if e == "started" or e.startswith("signal")]
    # v1's two starts, then: new 1 starts, old 1 stops, new 2 starts, old 2 stops
    assert order[2:] == [("started", False), ("signal SIGTERM", True),
                         ("started", False), ("signal SIGTERM", True)]


def test_stop_leaves_nothing_and_start_brings_everything_back(make_app):
    app = make_worker_app(make_app)
    app.relman("deploy", "v1", check=True)
    root = root_of(app)
    app.relman("stop", check=True)
    assert left_in(root / "releases") == []
    assert app.json("ps")["instances"] == []
    app.relman("start", check=True)
    assert len(running(app)) == 2
    assert serving(app, "v1")


def test_an_app_without_a_web_server(make_app, app_repo):
    """kind = "none": deploy and rollback hand the processes over; no socket, no health."""
    app = make_app(server={"kind": "none"}, processes={"worker": worker(1)})
    app.relman("deploy", "v1", check=True)
    release_version(app_repo, "v2")
    app.relman("deploy", "v2", check=True)
    root = root_of(app)
    assert not (root / "run" / "app.sock").exists()
    assert [i["release"] for i in app.json("ps")["instances"]] == [release_of(app, "v2")]
    app.relman("rollback", check=True)
    assert [i["release"] for i in app.json("ps")["instances"]] == [release_of(app, "v1")]
    assert os.readlink(root / "current") == f"releases/{release_of(app, 'v1')}"


def test_a_worker_crash_loop_after_the_switch_rolls_back(make_app, app_repo):
    app = make_worker_app(make_app, worker=worker(1, start_seconds=0.2))
    app.relman("deploy", "v1", check=True)
    release_version(app_repo, "v2", extra={"WORKER_EXIT_AFTER": "0.4"})
    app.relman("deploy", "v2", check=True)
    wait_until(lambda: serving(app, "v1"), timeout=60)
    wait_until(lambda: {i["release"] for i in running(app)} == {release_of(app, "v1")},
               timeout=30)
    # Marked failed once the rollback is done: a moment after v1 serves again.
    wait_until(lambda: {r["ref"]: r["state"] for r in app.json("releases")}["v2"] == "failed")
    assert any(e["event"] == "auto_rollback" for e in app.json("history"))


def test_a_rollback_runs_the_release_with_its_own_settings(make_app, app_repo):
    """Releases carry their settings: v2 deployed with 3 workers, v1 with 2; a rollback
    runs v1 with 2 again, and the history names the change."""
    app = make_worker_app(make_app)
    app.relman("deploy", "v1", check=True)
    # Deployed at once: the deploy reads the file itself, not waiting for the daemon to see
    # the change.
    app.config.write_text(app.config.read_text().replace("count = 2", "count = 3"))
    release_version(app_repo, "v2")
    app.relman("deploy", "v2", check=True)
    assert len(running(app)) == 3
    changed = [e for e in app.json("history") if e["event"] == "settings_changed"]
    assert "processes.worker.count 2 -> 3" in changed[-1]["changes"]
    app.relman("rollback", check=True)
    assert len(running(app)) == 2


@pytest.mark.parametrize("step", ["switched", "verified", "handed_over", "stopped_old"])
def test_a_daemon_killed_during_a_deploy_leaves_the_live_releases_processes(make_app, app_repo,
                                                                            step):
    """kill -9 of the daemon right after a step of a deploy: the next daemon runs exactly the
    live release's processes at their counts, and never two schedulers at once."""
    app = make_worker_app(make_app, worker=worker(2), beat=worker(1))
    app.relman("deploy", "v1", check=True)
    release_version(app_repo, "v2")
    app.kill9()
    app.start(env={"RELMAN_TEST_CRASH_AT": step})
    app.relman("deploy", "v2")
    app.proc.wait(30)
    app.start()
    live = app.json("status")["current"]
    assert {i["release"] for i in app.json("ps")["instances"]} == {live}
    assert len(running(app, "worker")) == 2
    assert len(running(app, "beat")) == 1
    beats: dict[str, int] = {}  # a beat's start and stop events never overlap another's
    for _t, event, process, _i, release, pid in events(app):
        if process == "beat" and event == "started":
            assert not beats, f"beat {pid} of {release} started while {beats} ran"
            beats[release] = pid
        elif process == "beat" and event in ("stopped", "signal SIGTERM"):
            beats = {r: p for r, p in beats.items() if p != pid}


def test_a_deploy_failing_after_the_handover_gives_the_old_processes_back(make_app, app_repo):
    """A job that fails once the processes were handed over (here: the disk refuses the next
    journal write) switches the web back and runs the old release's processes again."""
    app = make_worker_app(make_app)
    app.relman("deploy", "v1", check=True)
    v1 = release_of(app, "v1")
    app.kill9()
    app.start(env={"RELMAN_TEST_FAIL_AT": "deploy:handed_over"})
    release_version(app_repo, "v2")
    result = app.relman("deploy", "v2")
    assert result.returncode == 1, result.stdout
    assert serving(app, "v1")
    assert {i["release"] for i in running(app)} == {v1}
    assert len(running(app)) == 2


def test_restart_of_one_type_records_only_its_settings(make_app):
    """`relman restart worker` with server.workers and the worker count changed in the
    config: the worker runs with the new count, the web server and its recorded settings
    keep theirs; the history and `history` in text say what changed."""
    app = make_worker_app(make_app)
    app.relman("deploy", "v1", check=True)
    web = running(app, "web")[0]["pid"]
    text = app.config.read_text()
    app.config.write_text(text.replace('"workers": 1', '"workers": 2')
                          .replace("workers = 1", "workers = 2").replace("count = 2", "count = 3"))
    app.relman("restart", "worker", check=True)
    assert len(running(app)) == 3
    assert running(app, "web")[0]["pid"] == web
    v1 = release_of(app, "v1")
    settings = app.json("releases", "--settings", v1)["settings"]
    assert settings["server"]["workers"] == 1
    assert settings["processes"]["worker"]["count"] == 3
    changed = [e for e in app.json("history") if e["event"] == "settings_changed"][-1]
    assert changed["changes"] == ["processes.worker.count 2 -> 3"]
    assert "processes.worker.count 2 -> 3" in app.relman("history", check=True).stdout


def test_sd_notify_status_counts_the_processes(make_app, base_dir):
    """systemd's STATUS= line says how many instances of each type run and should."""
    path = base_dir / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(5)
    app = make_app(start=False, processes={"worker": worker(2)},
                   server={"kind": "gunicorn", "app": "app:server", "workers": 1})
    app.start(env={"NOTIFY_SOCKET": str(path)})
    app.relman("deploy", "v1", check=True)
    statuses: list[str] = []

    def seen() -> bool:
        with contextlib.suppress(TimeoutError):
            statuses.append(sock.recv(4096).decode())
        return any("worker 2/2" in s for s in statuses if s.startswith("STATUS="))

    wait_until(seen, timeout=20)
    sock.close()


def test_a_rolling_restart_failing_partway_puts_every_slot_back(make_app):
    """`restart worker` (overlap, rolling) with a command that only instance 1 survives:
    slot 1 was replaced before slot 2 failed; both end with the command that ran before."""
    app = make_worker_app(make_app, worker=worker(2, handover="overlap", start_seconds=0.3))
    app.relman("deploy", "v1", check=True)
    old = pids(app)
    text = app.config.read_text()
    broken = text.replace('"python", "worker.py"', '"sh", "-c", '
                          '"test $RELMAN_INSTANCE = 1 && NEW=1 exec python worker.py \\"$0\\"", ')
    assert broken != text
    app.config.write_text(broken.replace('", , "{root}', '", "{root}'))
    result = app.relman("restart", "worker")
    assert result.returncode == 1, result.stdout + result.stderr
    wait_until(lambda: len(running(app)) == 2)
    for line in running(app):
        assert "NEW" not in psutil.Process(line["pid"]).environ()
    assert pids(app) & old  # slot 2 was never replaced


def test_a_worker_program_missing_from_the_release_fails_it_without_cgroups(make_app,
                                                                             app_repo):
    """Without cgroups (a deploy user's daemon) the spawn itself fails: the deploy exits 1
    naming the process, the release is failed, the old workers run again."""
    app = make_worker_app(make_app)
    app.kill9()
    app.start(env={"RELMAN_CGROUPS": "off"})
    app.relman("deploy", "v1", check=True)
    app.config.write_text(app.config.read_text().replace('"python", "worker.py"',
                                                         '"no-such-program", "worker.py"'))
    release_version(app_repo, "v2")
    result = app.relman("deploy", "v2")
    assert result.returncode == 1, result.stderr
    assert "process worker" in result.stderr
    assert "no-such-program" in result.stderr
    assert serving(app, "v1")
    wait_until(lambda: len(running(app)) == 2)
    assert {r["ref"]: r["state"] for r in app.json("releases")}["v2"] == "failed"
    v2 = release_of(app, "v2")
    assert "no-such-program" in (root_of(app) / "log" / f"{v2}.worker.log").read_text()

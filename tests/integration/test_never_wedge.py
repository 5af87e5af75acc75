"""The daemon never wedges: a full disk ends a job (exit 1) and nothing else, a stuck git
does not stop the control socket, and the CLI gives up on a daemon that does not answer."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testing.fullfs import fill, free, small_tmpfs
from testing.git import release_version
from testing.waiting import wait_until
from tests.integration.test_failed_job import links_of, processes_of, release_id
from tests.integration.test_supervision import root_of, serving

QUICK = {"RELMAN_DAEMON_TIMEOUT": "10"}  # a wedged daemon fails the test in 10 s, not never


def status(app) -> dict:
    proc = app.relman("--json", "status", env=QUICK, timeout=60)
    assert proc.returncode == 0, (proc.stderr, app.log_tail())
    return json.loads(proc.stdout)


@contextlib.contextmanager
def on_small_disks(make_app, **tables) -> Iterator[tuple[Any, Path]]:
    """The sample app with state/ and log/ on small tmpfs mounts, started, v1 deployed;
    stopped before the mounts go (the daemon and the servers keep files open in both)."""
    app = make_app(start=False, **tables)
    root = root_of(app)
    with small_tmpfs(root / "state"), small_tmpfs(root / "log"):
        (root / "state" / "releases").mkdir(mode=0o750)
        try:
            app.start()
            app.relman("deploy", "v1", check=True)
            yield app, root
        finally:
            app.stop()


@pytest.mark.parametrize("full", ["state", "log"])
def test_a_full_disk_ends_the_job_and_the_daemon_goes_on(make_app, app_repo, full):
    """With state/ (journal, lock, manifests) or log/ (history, build and server logs) on a
    full file system, each deploy exits 1 with "no space left on device (PATH)", starts
    nothing and moves no link; v1 serves, status answers with no job left; once space is
    back, the next deploy works."""
    with on_small_disks(make_app) as (app, root):
        release_version(app_repo, "v2")
        before = links_of(root)
        filler = fill(root / full)
        for _ in range(2):  # the second one is where the daemon used to wedge
            proc = app.relman("deploy", "v2", env=QUICK, timeout=120)
            assert proc.returncode == 1, (proc.stderr, app.log_tail())
            assert f"no space left on device ({root / full}/" in proc.stderr
            assert links_of(root) == before
            assert serving(app, "v1")
            now = status(app)
            assert now["job"] is None
            assert now["live"] == release_id(app, "v1")
            assert len(now["servers"]) == 1, now["servers"]
        v2 = next((r["id"] for r in app.json("releases") if r["ref"] == "v2"), None)
        assert v2 is None or not processes_of(root, v2)

        free(filler)
        app.relman("deploy", "v2", check=True)
        assert serving(app, "v2")
        assert len(status(app)["servers"]) == 1


def test_a_daemon_restarted_on_a_full_disk_after_an_interrupted_deploy(make_app, app_repo):
    """A deploy interrupted mid-build by a daemon crash, then a full state/ and log/: the
    next daemon starts all the same (the half-built release it cannot mark failed is left
    for later), adopts v1 and answers; once space is back, the next daemon tidies up and a
    deploy works."""
    slow = "python3 -c \"import os, time; os.path.exists('SLOW') and time.sleep(30)\""
    with on_small_disks(make_app, build={"commands": [slow]}) as (app, root):
        (server,) = [s["pid"] for s in status(app)["servers"]]
        release_version(app_repo, "v2", extra={"SLOW": ""})
        threading.Thread(target=app.relman, args=("deploy", "v2"), daemon=True).start()
        wait_until(lambda: (job := status(app)["job"]) and job["step"] == "fetched"
                   and job["release"], timeout=60, what="the build of v2")
        app.kill9()
        assert [r for r in app.json("releases") if r["state"] == "unfinished"]
        fillers = [fill(root / "state"), fill(root / "log")]
        app.start()
        assert [s["pid"] for s in status(app)["servers"]] == [server]
        assert serving(app, "v1")
        for filler in fillers:
            free(filler)
        app.kill9()
        app.start()
        assert status(app)["job"] is None
        assert not [r for r in app.json("releases") if r["state"] == "unfinished"]
        app.relman("deploy", "v1", check=True)  # v2 builds for 30 s: v1 is quicker
        assert serving(app, "v1")


def test_a_server_killed_on_a_full_disk_serves_again(make_app):
    """With state/ and log/ full, a SIGKILLed live server is restarted all the same: the
    history the full disk refuses is only a warning, and a start it refuses is retried with
    backoff. Status answers meanwhile; once space is back, v1 serves."""
    with on_small_disks(make_app) as (app, root):
        (killed,) = [s["pid"] for s in status(app)["servers"]]
        fillers = [fill(root / "state"), fill(root / "log")]
        os.killpg(killed, signal.SIGKILL)
        wait_until(lambda: killed not in [s["pid"] for s in status(app)["servers"]],
                   timeout=30, what="the daemon to see the crash")
        # A restart is tried, and refused, while the disk is still full (the server's log
        # cannot be written); the next try, with space back, serves.
        wait_until(lambda: "server.restart_failed" in app.log_tail(300), timeout=60,
                   what="a restart refused by the full disk")
        status(app)  # answers meanwhile
        for filler in fillers:
            free(filler)
        wait_until(lambda: serving(app, "v1"), timeout=90, what="v1 to serve again")
        assert len(status(app)["servers"]) == 1


def test_a_git_that_hangs_does_not_stop_the_daemon(make_app, app_repo, base_dir):
    """A git that hangs while the deploy resolves its ref (a stuck mirror on NFS) holds up
    that deploy only: status answers meanwhile and shows the job; once git goes on, so does
    the deploy."""
    bin_dir, gate = base_dir / "bin", base_dir / "git-may-go"
    bin_dir.mkdir()
    (bin_dir / "git").write_text(f"""#!/bin/sh
case " $* " in *" rev-parse "*)
    touch {base_dir}/git-stuck
    while [ ! -e {gate} ]; do sleep 0.05; done ;;
esac
exec {shutil.which("git")} "$@"
""")
    (bin_dir / "git").chmod(0o755)
    gate.touch()
    app = make_app(start=False)
    app.start(env={"PATH": f"{bin_dir}:{os.environ['PATH']}"})
    app.relman("deploy", "v1", check=True)
    release_version(app_repo, "v2")
    (base_dir / "git-stuck").unlink(missing_ok=True)  # v1's own rev-parse made it
    gate.unlink()
    results = []
    deploy = threading.Thread(target=lambda: results.append(app.relman("deploy", "v2")))
    deploy.start()
    try:
        wait_until((base_dir / "git-stuck").exists, timeout=60, what="git to hang")
        now = status(app)
        assert now["job"]["job"] == "deploy"
        assert now["live"] == release_id(app, "v1")
    finally:
        gate.touch()
        deploy.join(120)
    assert results[0].returncode == 0, results[0].stderr
    assert serving(app, "v2")


def test_a_daemon_that_does_not_answer_is_given_up_with_exit_3(make_app):
    """A daemon that is stopped dead (SIGSTOP: its event loop never runs): `relman status`
    exits 3 after RELMAN_DAEMON_TIMEOUT seconds of silence, saying what to do; the app
    keeps serving, and the daemon answers again once it runs."""
    app = make_app()
    app.relman("deploy", "v1", check=True)
    os.kill(app.proc.pid, signal.SIGSTOP)
    try:
        proc = app.relman("status", env={"RELMAN_DAEMON_TIMEOUT": "2"}, timeout=60)
        assert proc.returncode == 3, proc.stderr
        assert "the daemon does not answer" in proc.stderr
        assert "kill -9" in proc.stderr
        assert serving(app, "v1")
    finally:
        os.kill(app.proc.pid, signal.SIGCONT)
    assert status(app)["live"] == release_id(app, "v1")


def test_a_long_quiet_step_is_not_cut_off(make_app):
    """A build command that prints nothing for longer than the CLI's silence limit: the
    daemon's keepalives keep the deploy's stream open until it ends."""
    # Keepalives come every 5 s: a 12 s limit leaves 7 s for a busy machine, and the 15 s
    # step is longer than the limit, so without keepalives the CLI would give up.
    app = make_app(build={"commands": ["sleep 15"]})
    proc = app.relman("deploy", "v1", env={"RELMAN_DAEMON_TIMEOUT": "12"})
    assert proc.returncode == 0, proc.stderr
    assert serving(app, "v1")


def test_a_job_whose_first_journal_write_fails_leaves_no_job_behind(make_app, app_repo):
    """state/journal.json is a directory, so a deploy fails at its very first write (a bug:
    exit 70): status shows no job afterwards (a phantom job there also kept automatic
    rollbacks waiting for ever), and the next deploy works."""
    app = make_app()
    app.relman("deploy", "v1", check=True)
    release_version(app_repo, "v2")
    journal = root_of(app) / "state" / "journal.json"
    journal.mkdir()
    proc = app.relman("deploy", "v2", env=QUICK)
    assert proc.returncode == 70, proc.stderr
    assert status(app)["job"] is None
    journal.rmdir()
    app.relman("deploy", "v2", check=True)
    assert serving(app, "v2")

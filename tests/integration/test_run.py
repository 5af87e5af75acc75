"""`relman run -- CMD` (a one-off command in the live release's environment) and `relman
logs --process NAME`, against a real deploy of the sample app (issue 9, point 4)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from testing.celery import DATA_ENV, enqueue_code, marker, wait_marker
from testing.daemon import RELMAN
from tests.integration.test_supervision import root_of

# Prints what the command sees, then exits 3.
REPORT = """
import json, os, sys
print(json.dumps({"cwd": os.getcwd(), "ppid": os.getppid(), "executable": sys.executable,
                  "env": dict(os.environ)}))
sys.exit(3)
"""
TRACKING_TAGS = ("RELMAN_APP", "RELMAN_ROOT", "RELMAN_UNIT", "RELMAN_INSTANCE", "RELMAN_JOB")


@pytest.fixture
def deployed(make_app):
    """The sample app with server.env and an env_file, v1 deployed."""
    app = make_app(server={"kind": "gunicorn", "app": "app:server",
                           "env": {"FROM_CONFIG": "config", "SHARED": "from config"},
                           "env_file": "app.env"})
    (root_of(app) / "shared" / "app.env").write_text("FROM_FILE=file\nSHARED='from file'\n")
    app.relman("deploy", "v1", check=True)
    return app


def test_run_in_the_live_release(deployed):
    """The command replaces the CLI (its parent is the caller), runs in the live release's
    resolved directory with its venv's python, server.env, env_file and RELMAN_RELEASE /
    RELMAN_PROCESS set, keeps TERM but not the caller's other variables nor any tracking
    tag, and its exit status is relman's."""
    app = deployed
    (release,) = app.json("releases")
    caller = dict.fromkeys(TRACKING_TAGS, "x") | {"TERM": "xterm-relman-test",
                                                  "ADMIN_ONLY": "1", "PYTHONPATH": "/nope"}
    done = subprocess.run([*RELMAN, "--config", str(app.config), "run", "--", "python", "-c",
                           REPORT], capture_output=True, text=True, timeout=60,
                          env={**app.env, **caller}, check=False)
    assert done.returncode == 3, done.stderr
    seen = json.loads(done.stdout)
    env = seen["env"]
    venv = Path(release["venv"])
    assert seen["cwd"] == str((root_of(app) / "releases" / release["id"]).resolve())
    assert seen["ppid"] == os.getpid(), "relman should have exec'd the command"
    assert Path(seen["executable"]).parent == venv / "bin"
    assert env["VIRTUAL_ENV"] == str(venv)
    assert env["PATH"].split(os.pathsep)[0] == str(venv / "bin")
    assert (env["FROM_CONFIG"], env["FROM_FILE"], env["SHARED"]) == ("config", "file",
                                                                     "from file")
    assert (env["RELMAN_RELEASE"], env["RELMAN_PROCESS"]) == (release["id"], "run")
    assert env["TERM"] == "xterm-relman-test"
    assert not {"ADMIN_ONLY", "PYTHONPATH", *TRACKING_TAGS} & set(env)


def test_run_streams_output_and_needs_no_daemon(deployed):
    """Output arrives while the command runs (a line, then the command waits for the test
    to see it), and a stopped daemon is no obstacle; a venv console script is found."""
    app = deployed
    app.stop()
    go = root_of(app) / "go"
    code = ("import os, sys, time\nprint('first', flush=True)\n"
            f"while not os.path.exists({str(go)!r}): time.sleep(0.02)\nprint('second')\n")
    proc = subprocess.Popen([*RELMAN, "--config", str(app.config), "run", "--", "python", "-c",
                             code], stdout=subprocess.PIPE, text=True, env=app.env)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "first\n"
        go.touch()
        assert proc.stdout.read() == "second\n"
        assert proc.wait(30) == 0
    finally:
        proc.kill()
        proc.wait()
    gunicorn = app.relman("run", "--", "gunicorn", "--version")
    assert gunicorn.returncode == 0, gunicorn.stderr
    assert "gunicorn" in gunicorn.stdout


def test_run_errors(make_app, deployed):
    """No command: exit 2; an unknown command: 127, a file that is no program: 126, each in
    one line naming it; nothing live: exit 1 saying so."""
    app = deployed
    assert app.relman("run").returncode == 2
    unknown = app.relman("run", "--", "no-such-command-relman")
    assert (unknown.returncode, unknown.stdout) == (127, "")
    assert unknown.stderr.startswith("relman: error: run: no-such-command-relman: command "
                                     "not found in the release's venv or on PATH")
    assert len(unknown.stderr.splitlines()) == 1
    not_a_program = app.relman("run", "--", "./VERSION")
    assert not_a_program.returncode == 126, not_a_program.stderr
    assert not_a_program.stderr == "relman: error: run: ./VERSION: Permission denied\n"
    fresh = make_app(name="fresh", start=False)
    nothing = fresh.relman("run", "--", "true")
    assert (nothing.returncode, nothing.stderr) == (
        1, "relman: error: run: nothing is live: deploy a release first\n")


def test_logs_of_a_process(deployed):
    """`logs --process NAME` shows log/<release>.NAME.log (-f follows it), `--process web`
    the server's log; a process with no log, or a name that is no name: exit 2, naming
    the file or the name."""
    app = deployed
    (release,) = app.json("releases")
    log = root_of(app) / "log" / f"{release['id']}.worker.log"
    log.write_text("worker one\nworker two\n")
    assert app.relman("logs", "--process", "worker", "-n", "1", check=True).stdout == \
        "worker two\n"
    assert app.relman("logs", "-p", "worker", release["id"], check=True).stdout == \
        "worker one\nworker two\n"
    with app.follow("--process", "worker") as wait_for:
        wait_for("worker two")
        with log.open("a") as f:
            f.write("worker three\n")
        wait_for("worker three")
    web = app.relman("logs", "--process", "web", check=True).stdout
    assert web
    assert web == app.relman("logs", check=True).stdout
    missing = app.relman("logs", "--process", "beat")
    assert missing.returncode == 2
    assert missing.stderr == (f"relman: error: release {release['id']} has no log of a "
                              f"process 'beat': {log.with_name(release['id'] + '.beat.log')}"
                              " does not exist\n")
    for bad in ("../x", "Worker", ""):
        refused = app.relman("logs", "--process", bad)
        assert refused.returncode == 2, bad
        assert "not a process name" in refused.stderr


def test_celery_worker_through_run_finishes_its_task_on_sigterm(make_app, celery_repo,
                                                                 base_dir):
    """The Celery sample app on kombu's filesystem broker (no Redis): a worker started with
    `relman run` (venv console script) takes a task queued with `relman run`, and on
    SIGTERM (to relman's pid: the worker is exec'd in its place) finishes it before it
    exits 0 (warm shutdown)."""
    data = base_dir / "celery-data"
    app = make_app(repo=celery_repo, server={"kind": "gunicorn", "app": "app:server",
                                             "env": {DATA_ENV: str(data)}})
    app.relman("deploy", "v1", check=True)
    (release,) = app.json("releases")
    log = (base_dir / "worker.log").open("w")
    worker = subprocess.Popen([*RELMAN, "--config", str(app.config), "run", "--", "celery",
                               "-A", "tasks", "worker", "--pool=solo", "--loglevel=INFO"],
                              stdout=log, stderr=subprocess.STDOUT, env=app.env)
    try:
        app.relman("run", "--", "python", "-c", enqueue_code("job", 2), check=True)
        started = wait_marker(data, "started", "job")
        assert started == f"{release['id']} {worker.pid}"
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0
        assert marker(data, "done", "job") == started
    finally:
        worker.kill()
        worker.wait()
        log.close()


def test_run_has_the_terminal(deployed):
    """On a terminal, the command gets that terminal (an interactive `manage.py shell`)."""
    app = deployed
    controller, terminal = os.openpty()
    try:
        done = subprocess.run([*RELMAN, "--config", str(app.config), "run", "--", "python",
                               "-c", "import sys; sys.stderr.write(repr((sys.stdin.isatty(),"
                               " sys.stdout.isatty())))"],
                              stdin=terminal, stdout=terminal, stderr=subprocess.PIPE,
                              text=True, env=app.env, timeout=60, check=False)
    finally:
        os.close(terminal)
        os.close(controller)
    assert (done.returncode, done.stderr) == (0, "(True, True)")

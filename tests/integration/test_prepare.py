"""`relman deploy REF --prepare` and `relman abort RELEASE` (issue 10, the host side of a
fleet deploy): a real daemon, real gunicorn, a private nginx where the preview applies."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import psutil

from testing.git import release_version
from testing.load import Load
from testing.unixhttp import http_get
from testing.waiting import pid_gone, wait_until


def root_of(app) -> Path:
    return app.config.with_suffix("")  # make_app: root = base_dir / name, config name.toml


def events(app) -> list[tuple[str, str]]:
    return [(e["event"], e.get("release", "")) for e in app.json("history")]


def candidate_pid(app, release: str) -> int:
    servers = app.json("status")["servers"]
    return next(s["pid"] for s in servers if s["release"] == release and not s["live"])


def prepare(app, ref: str, *args: str) -> str:
    """`deploy REF --prepare ARGS`: the release id, printed alone on its last line."""
    proc = app.relman("deploy", ref, "--prepare", *args, check=True)
    return proc.stdout.splitlines()[-1]


def answer(app, *args: str) -> dict:
    """`relman --json ARGS`: its result, the last line after the progress lines."""
    return json.loads(app.relman("--json", *args, check=True).stdout.splitlines()[-1])


def kill_candidate(app, release: str) -> int:
    """SIGKILL *release*'s candidate and wait until it is gone; its pid."""
    pid = candidate_pid(app, release)
    psutil.Process(pid).kill()
    wait_until(lambda: pid_gone(pid), timeout=30, what="the candidate to die")
    return pid


def next_sock_target(app) -> str:
    return os.readlink(root_of(app) / "run/next.sock")


def test_prepare_then_abort_under_load_leaves_live_untouched(stack, app_repo):
    """The prepared candidate answers on next.sock with the new version while live keeps
    the old; other jobs (a prepare of another release too) are refused naming `relman
    abort ID`; a wrong id exits 2; abort stops the candidate with no failed request
    through nginx, and the same ref can be deployed afterwards (the release stayed
    built)."""
    app, nginx = stack("gunicorn")
    app.relman("deploy", "v1", check=True)
    v1 = app.json("status")["live"]
    release_version(app_repo, "v2")
    with Load(nginx.url, ("/slow?ms=50", "/"), concurrency=8, max_seconds=240) as load:
        time.sleep(0.5)
        v2 = prepare(app, "v2")
        status = app.json("status")
        assert (status["live"], status["prepared"]) == (v1, v2)
        assert status["prepared_until"] > time.time()
        assert "prepared: " + v2 in app.relman("status", check=True).stdout
        pid = candidate_pid(app, v2)
        assert http_get(root_of(app) / "run/next.sock")[1].startswith("sample v2")
        assert http_get(root_of(app) / "run/app.sock")[1].startswith("sample v1")

        refused = app.relman("deploy", "v2")
        assert refused.returncode == 4, refused.stderr
        assert f"relman abort {v2}" in refused.stderr
        assert prepare(app, "v2") == v2  # prepared already: done (test_hostside.py)
        again = app.relman("deploy", "v1", "--prepare")  # live, but another is prepared
        assert again.returncode == 4, again.stderr
        assert app.relman("rollback").returncode == 4
        wrong = app.relman("abort", v1)
        assert wrong.returncode == 2, wrong.stderr
        assert f"the prepared release is {v2}" in wrong.stderr
        assert app.relman("abort", "--", "../etc").returncode == 2

        aborted = app.json("abort", v2)
        assert aborted["release"] == v2
        time.sleep(0.5)
    assert load.result.failed == 0, (load.result.statuses, load.result.errors)
    assert pid_gone(pid)
    status = app.json("status")
    assert (status["live"], status["prepared"]) == (v1, None)
    assert [s["release"] for s in status["servers"]] == [v1]
    assert next_sock_target(app) == os.readlink(root_of(app) / "run/app.sock")
    assert not (root_of(app) / "state/prepared.json").exists()
    assert ("prepared", v2) in events(app)
    assert ("prepare_aborted", v2) in events(app)
    assert app.relman("abort", v2).returncode == 2  # nothing prepared any more
    app.relman("deploy", "v2", check=True)
    assert app.json("status")["live"] == v2


def test_a_prepared_candidate_expires_after_prepare_timeout(make_app, app_repo):
    """Not switched within swap.prepare_timeout, the candidate is stopped by the daemon
    (one timer) and the history says prepare_expired; the live release serves on."""
    app = make_app(swap={"prepare_timeout": 2})
    app.relman("deploy", "v1", check=True)
    v1 = app.json("status")["live"]
    release_version(app_repo, "v2")
    v2 = prepare(app, "v2", "--no-release-phase")
    pid = candidate_pid(app, v2)
    wait_until(lambda: ("prepare_expired", v2) in events(app), timeout=30,
               what="the prepared candidate to expire")
    wait_until(lambda: not psutil.pid_exists(pid), timeout=30, what="the candidate to stop")
    status = app.json("status")
    assert (status["live"], status["prepared"]) == (v1, None)
    assert app.relman("abort", v2).returncode == 2
    app.relman("deploy", "v2", check=True)  # no longer refused


def test_a_daemon_killed_while_prepared_keeps_it_prepared(make_app, app_repo):
    """SIGKILL of the daemon while a candidate is prepared: the next daemon adopts it,
    still prepared with its deadline (next.sock leads to it), and `switch` works."""
    app = make_app()
    app.relman("deploy", "v1", check=True)
    release_version(app_repo, "v2")
    v2 = prepare(app, "v2")
    deadline = app.json("status")["prepared_until"]
    pid = candidate_pid(app, v2)
    app.kill9()
    assert psutil.pid_exists(pid)  # the candidate outlives its daemon
    app.start()
    status = app.json("status")
    assert (status["prepared"], status["prepared_until"]) == (v2, deadline)
    assert candidate_pid(app, v2) == pid
    assert http_get(root_of(app) / "run/next.sock")[1].startswith("sample v2")
    assert app.relman("deploy", "v1").returncode == 4  # still the one prepared candidate
    app.relman("switch", v2, check=True)
    status = app.json("status")
    assert (status["live"], status["prepared"]) == (v2, None)
    assert [s["pid"] for s in status["servers"] if s["live"]] == [pid]


def test_a_candidate_whose_deadline_passed_while_the_daemon_was_down_stops(make_app,
                                                                            app_repo):
    """Killed while prepared and restarted after the deadline: the candidate is stopped,
    the history says prepare_expired, next.sock leads to the live server, jobs run."""
    app = make_app(swap={"prepare_timeout": 3})
    app.relman("deploy", "v1", check=True)
    v1 = app.json("status")["live"]
    release_version(app_repo, "v2")
    v2 = prepare(app, "v2")
    deadline = app.json("status")["prepared_until"]
    pid = candidate_pid(app, v2)
    app.kill9()
    wait_until(lambda: time.time() > deadline + 0.5, timeout=30, what="the deadline")
    app.start()
    wait_until(lambda: not psutil.pid_exists(pid), timeout=30, what="the candidate to stop")
    status = app.json("status")
    assert (status["live"], status["prepared"]) == (v1, None)
    assert ("prepare_expired", v2) in events(app)
    assert next_sock_target(app) == os.readlink(root_of(app) / "run/app.sock")
    assert not (root_of(app) / "state/prepared.json").exists()
    app.relman("deploy", "v2", check=True)


def test_prepare_then_switch_under_load_fails_no_request(stack, app_repo):
    """`deploy v2 --prepare` then `switch ID` under load through nginx: 0 failed requests,
    v2 live, the old server kept warm for --keep-warm seconds (not swap.keep_warm = 0), and
    the history says deployed; a switch of the same id again exits 2 (nothing prepared)."""
    app, nginx = stack("gunicorn")
    app.relman("deploy", "v1", check=True)
    v1 = app.json("status")["live"]
    release_version(app_repo, "v2")
    with Load(nginx.url, ("/slow?ms=50", "/"), concurrency=8, max_seconds=240) as load:
        time.sleep(0.5)
        v2 = prepare(app, "v2")
        wrong = app.relman("switch", v1)
        assert wrong.returncode == 2, wrong.stderr
        assert app.json("status")["prepared"] == v2  # a wrong id leaves it prepared
        switched = answer(app, "switch", v2, "--keep-warm", "60")
        assert switched["release"] == v2
        time.sleep(0.5)
    assert load.result.failed == 0, (load.result.statuses, load.result.errors)
    status = app.json("status")
    assert (status["live"], status["prepared"]) == (v2, None)
    assert {s["release"]: s["state"] for s in status["servers"]} == {v2: "live", v1: "warm"}
    assert http_get(root_of(app) / "run/app.sock")[1].startswith("sample v2")
    assert ("deployed", v2) in events(app)
    assert app.relman("switch", v2).returncode == 2
    assert answer(app, "rollback")["release"] == v1  # the warm one: a switch only


def test_a_candidate_that_died_is_not_switched_to(make_app, app_repo):
    """The candidate is checked again before the switch: killed in between, the switch
    exits 1, the live release is untouched and the history says why."""
    app = make_app()
    app.relman("deploy", "v1", check=True)
    v1 = app.json("status")["live"]
    release_version(app_repo, "v2")
    v2 = prepare(app, "v2")
    kill_candidate(app, v2)
    failed = app.relman("switch", v2)
    assert failed.returncode == 1, (failed.stdout, failed.stderr)
    assert "prepared candidate" in failed.stdout + failed.stderr
    status = app.json("status")
    assert (status["live"], status["prepared"]) == (v1, None)
    assert http_get(root_of(app) / "run/app.sock")[1].startswith("sample v1")
    assert ("switch_failed", v2) in events(app)
    app.relman("deploy", "v2", check=True)


def test_no_release_phase_skips_release_commands(make_app, app_repo):
    """With --no-release-phase the release commands do not run (this one fails for v2):
    prepare succeeds and --json gives the release id and its deadline; without it the
    failing command fails the prepare (exit 1) and nothing is left prepared."""
    app = make_app(release={"commands": ["python -c \"import os; "
                                         "raise SystemExit(0 if open('VERSION').read()"
                                         ".strip() == 'v1' else 3)\""]})
    app.relman("deploy", "v1", check=True)
    release_version(app_repo, "v2")
    failed = app.relman("deploy", "v2", "--prepare")
    assert failed.returncode == 1, (failed.stdout, failed.stderr)
    assert app.json("status")["prepared"] is None
    assert not (root_of(app) / "state/prepared.json").exists()
    result = answer(app, "deploy", "v2", "--prepare", "--no-release-phase")
    assert result["prepared_until"] > time.time()
    assert app.json("status")["prepared"] == result["release"]
    app.json("abort", result["release"])


def test_a_daemon_killed_mid_switch_recovers_like_a_deploy(make_app, app_repo):
    """SIGKILL right after the switch step of `relman switch`: the restarted daemon
    recovers the half-done swap as it does a deploy's (what app.sock leads to serves),
    nothing is left prepared, and jobs run again."""
    app = make_app()
    app.relman("deploy", "v1", check=True)
    release_version(app_repo, "v2")
    app.stop()
    app.start(env={"RELMAN_TEST_CRASH_AT": "switch:switched"})
    v2 = prepare(app, "v2")
    assert app.relman("switch", v2).returncode != 0  # the daemon died under it
    app.proc.wait(30)
    app.start()
    status = app.json("status")
    assert status["prepared"] is None
    assert status["live"] == v2  # app.sock led to it: it serves
    assert http_get(root_of(app) / "run/app.sock")[1].startswith("sample v2")
    assert ("job_interrupted", v2) in events(app)
    app.relman("deploy", "v1", check=True)


def test_a_live_crash_while_prepared_aborts_the_candidate_and_restarts_live(make_app,
                                                                            app_repo):
    """The live server killed while a candidate is prepared: the daemon's crash restart
    comes first; it aborts the candidate (prepare_aborted) and starts the live release."""
    app = make_app()
    app.relman("deploy", "v1", check=True)
    v1 = app.json("status")["live"]
    release_version(app_repo, "v2")
    v2 = prepare(app, "v2")
    live = next(s["pid"] for s in app.json("status")["servers"] if s["live"])
    candidate = candidate_pid(app, v2)
    os.killpg(live, 9)
    wait_until(lambda: ("prepare_aborted", v2) in events(app), timeout=60,
               what="the candidate to be aborted")
    wait_until(lambda: app.json("status")["live"] == v1 and not psutil.pid_exists(candidate),
               timeout=60, what="the live release restarted, the candidate stopped")
    assert app.json("status")["prepared"] is None

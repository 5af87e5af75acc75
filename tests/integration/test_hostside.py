"""The host side of a fleet deploy that a coordinator runs again (issue 10): prepare is done
when its release is live or prepared already, `deploy --build-only`, `rollback --prepare`
(a warm instance taken over) and `switch --keep-warm` as a lower bound. A real daemon, real
gunicorn, a private nginx where the preview applies."""

from __future__ import annotations

import time

import psutil

from testing.git import release_version
from testing.load import Load
from testing.unixhttp import http_get
from testing.waiting import pid_gone, wait_until
from tests.integration.test_prepare import (
    answer,
    candidate_pid,
    events,
    kill_candidate,
    prepare,
    root_of,
)


def pids(app) -> dict[str, int]:
    return {s["instance"]: s["pid"] for s in app.json("status")["servers"]}


def test_prepare_of_a_live_or_prepared_release_is_done(make_app, app_repo):
    """`deploy REF --prepare` of the live release exits 0 and starts nothing (live=True,
    its id on the last line after a line saying so); of the release prepared already it
    answers with that candidate and its deadline, no second one; of another release it
    exits 4, as `--build-only` of another does, while `--build-only` of the prepared one
    is done."""
    app = make_app()
    app.relman("deploy", "v1", check=True)
    v1 = app.json("status")["live"]
    before = pids(app)
    proc = app.relman("deploy", "v1", "--prepare", check=True)
    lines = proc.stdout.splitlines()
    assert lines[-1] == v1
    assert lines[-2] == f"release {v1} is live already"
    live = answer(app, "deploy", "v1", "--prepare")
    assert (live["release"], live["live"], live["prepared_until"]) == (v1, True, 0)
    assert pids(app) == before
    assert app.json("status")["prepared"] is None
    assert ("deploy_failed", v1) not in events(app)

    release_version(app_repo, "v2")
    first = answer(app, "deploy", "v2", "--prepare")
    v2, candidate = first["release"], candidate_pid(app, first["release"])
    again = answer(app, "deploy", "v2", "--prepare", "--no-release-phase")
    assert (again["release"], again["prepared_until"], again["live"]) == \
        (v2, first["prepared_until"], False)
    assert candidate_pid(app, v2) == candidate
    assert len(app.json("status")["servers"]) == 2
    assert [e for e in events(app) if e[0] == "prepared"] == [("prepared", v2)]

    release_version(app_repo, "v3")
    other = app.relman("deploy", "v3", "--prepare")
    assert other.returncode == 4, other.stderr
    assert f"relman abort {v2}" in other.stderr
    assert app.relman("deploy", "v3", "--build-only").returncode == 4
    assert app.relman("deploy", "v2", "--build-only", check=True).stdout.splitlines()[-1] == v2
    assert app.json("status")["prepared"] == v2
    app.relman("switch", v2, check=True)
    assert app.json("status")["live"] == v2


def test_prepare_again_after_the_candidate_exited_starts_a_new_one(make_app, app_repo):
    """A prepared candidate that has exited is no answer to a rerun: it is aborted and
    the release prepared again with a new candidate, which switches."""
    app = make_app()
    app.relman("deploy", "v1", check=True)
    release_version(app_repo, "v2")
    v2 = prepare(app, "v2")
    dead = kill_candidate(app, v2)
    assert prepare(app, "v2") == v2
    assert candidate_pid(app, v2) != dead
    assert ("prepare_aborted", v2) in events(app)
    app.relman("switch", v2, check=True)
    assert http_get(root_of(app) / "run/app.sock")[1].startswith("sample v2")


def test_build_only_builds_and_starts_nothing(make_app, app_repo):
    """`deploy REF --build-only` fetches and builds REF (its release commands, failing here
    for v2, do not run), prints the id last, starts nothing; `deploy REF --prepare
    --no-release-phase` then reuses the build. With --prepare or --no-release-phase it
    exits 2 in one line."""
    app = make_app(release={"commands": ["python -c \"import os; "
                                         "raise SystemExit(0 if open('VERSION').read()"
                                         ".strip() == 'v1' else 3)\""]})
    app.relman("deploy", "v1", check=True)
    v1 = app.json("status")["live"]
    before = pids(app)
    release_version(app_repo, "v2")
    proc = app.relman("deploy", "v2", "--build-only", check=True)
    v2 = proc.stdout.splitlines()[-1]
    assert v2 != v1
    assert "[built]" in proc.stdout
    assert pids(app) == before
    status = app.json("status")
    assert (status["live"], status["prepared"]) == (v1, None)
    states = {r["id"]: r["state"] for r in app.json("releases")}
    assert states[v2] == "built"
    assert ("built", v2) in events(app)
    built = answer(app, "deploy", "v2", "--build-only")
    assert (built["release"], built["ref"]) == (v2, "v2")
    assert len(built["sha"]) == 40

    reused = app.relman("deploy", "v2", "--prepare", "--no-release-phase", check=True)
    assert "already built: reusing it" in reused.stdout
    assert reused.stdout.splitlines()[-1] == v2
    app.relman("abort", v2, check=True)
    for flags in (("--prepare",), ("--no-release-phase",)):
        bad = app.relman("deploy", "v2", "--build-only", *flags)
        assert bad.returncode == 2, bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1, bad.stderr
        assert "--build-only" in bad.stderr


def test_rollback_prepare_takes_over_the_warm_instance_under_load(stack, app_repo):
    """`rollback --prepare` with the target kept warm: the warm instance is the candidate
    (same pid), previewed on next.sock, still there after its warm window would have ended;
    `switch ID` makes it live with 0 failed requests through nginx, and the history says
    rolled_back."""
    app, nginx = stack("gunicorn", swap={"keep_warm": 8})
    app.relman("deploy", "v1", check=True)
    v1 = app.json("status")["live"]
    release_version(app_repo, "v2")
    with Load(nginx.url, ("/slow?ms=50", "/"), concurrency=8, max_seconds=240) as load:
        app.relman("deploy", "v2", check=True)
        warm = next(s["pid"] for s in app.json("status")["servers"] if s["state"] == "warm")
        kept_until = time.time() + 8
        proc = app.relman("rollback", "--prepare", check=True)
        assert proc.stdout.splitlines()[-1] == v1
        assert "was warm: taken over" in proc.stdout
        assert candidate_pid(app, v1) == warm
        assert http_get(root_of(app) / "run/next.sock")[1].startswith("sample v1")
        wait_until(lambda: time.time() > kept_until + 1, timeout=30, what="the warm window")
        status = app.json("status")
        assert status["prepared"] == v1
        assert {s["release"]: s["state"] for s in status["servers"]}[v1] == "healthy"
        assert psutil.pid_exists(warm)
        done = answer(app, "switch", v1)
        assert done["release"] == v1
        time.sleep(0.5)
    assert load.result.failed == 0, (load.result.statuses, load.result.errors)
    status = app.json("status")
    assert (status["live"], status["prepared"]) == (v1, None)
    assert [s["pid"] for s in status["servers"] if s["live"]] == [warm]
    assert ("rolled_back", v1) in events(app)


def test_deploy_prepare_takes_over_a_warm_instance_of_its_release(make_app, app_repo):
    """`deploy REF --prepare` when REF's release is kept warm (a fleet deploy again after a
    fleet rollback): the warm instance is the candidate (same pid, nothing started), as a
    plain deploy's swap reuses it; its switch makes it live."""
    app = make_app(swap={"keep_warm": 60})
    app.relman("deploy", "v1", check=True)
    release_version(app_repo, "v2")
    app.relman("deploy", "v2", check=True)
    v2 = app.json("status")["live"]
    app.relman("rollback", check=True)
    warm = next(s["pid"] for s in app.json("status")["servers"] if s["state"] == "warm")
    proc = app.relman("deploy", "v2", "--prepare", check=True)
    assert proc.stdout.splitlines()[-1] == v2
    assert "was warm: taken over" in proc.stdout
    assert "[start]" not in proc.stdout
    assert candidate_pid(app, v2) == warm
    assert answer(app, "switch", v2)["release"] == v2
    assert [s["pid"] for s in app.json("status")["servers"] if s["live"]
            and s["process"] == "web"] == [warm]


def test_prepare_with_the_release_phase_redoes_one_prepared_without_it(make_app, app_repo,
                                                                       base_dir):
    """A candidate prepared with --no-release-phase (a killed fleet run's, on a host that
    was not its release host) is not taken as done by a prepare that runs the release
    phase (the rerun's release host), a daemon restart in between or not: it is aborted,
    the release phase runs, and a new candidate is prepared. The other way round it is
    reused."""
    notes = base_dir / "release-phase.txt"
    app = make_app(release={"commands": [["sh", "-c", f"pwd >> {notes}"]]})
    app.relman("deploy", "v1", check=True)
    notes.unlink()
    release_version(app_repo, "v2")
    v2 = app.relman("deploy", "v2", "--prepare", "--no-release-phase",
                    check=True).stdout.splitlines()[-1]
    assert not notes.exists()
    skipped = candidate_pid(app, v2)
    app.kill9()  # what prepared.json says of it survives the daemon
    app.start()
    assert candidate_pid(app, v2) == skipped
    proc = app.relman("deploy", "v2", "--prepare", check=True)
    assert "was prepared without the release phase: preparing again" in proc.stdout
    assert proc.stdout.splitlines()[-1] == v2
    assert notes.read_text().split() == [str(root_of(app) / "releases" / v2)]
    assert candidate_pid(app, v2) != skipped
    assert pid_gone(skipped)  # adopted after the restart: a zombie until init reaps it
    with_phase = candidate_pid(app, v2)
    again = app.relman("deploy", "v2", "--prepare", "--no-release-phase", check=True)
    assert "is prepared already" in again.stdout
    assert candidate_pid(app, v2) == with_phase
    app.relman("abort", v2, check=True)


def test_rollback_prepare_starts_a_candidate_and_survives_a_daemon_kill(make_app, app_repo):
    """With nothing warm, `rollback --prepare` starts a candidate of the target (no fetch,
    no build); of the live release it exits 0 with live=True; a daemon SIGKILLed while it
    is prepared adopts it again, and its switch is a rollback. `switch --keep-warm 0`
    keeps the old release warm for swap.keep_warm all the same (at least, not instead)."""
    app = make_app(swap={"keep_warm": 60})
    app.relman("deploy", "v1", check=True)
    v1 = app.json("status")["live"]
    release_version(app_repo, "v2")
    v2 = prepare(app, "v2")
    app.relman("switch", v2, "--keep-warm", "0", check=True)
    states = {s["release"]: s["state"] for s in app.json("status")["servers"]}
    assert states == {v2: "live", v1: "warm"}
    app.relman("stop", check=True)  # nothing warm any more
    app.relman("start", check=True)

    live = app.relman("rollback", v2, "--prepare", check=True).stdout.splitlines()
    assert live[-2:] == [f"release {v2} is live already", v2]
    prepared = answer(app, "rollback", "--prepare")
    assert (prepared["release"], prepared["live"]) == (v1, False)
    assert prepared["prepared_until"] > time.time()
    pid = candidate_pid(app, v1)
    app.kill9()
    app.start()
    status = app.json("status")
    assert (status["prepared"], status["prepared_until"]) == (v1, prepared["prepared_until"])
    assert candidate_pid(app, v1) == pid
    again = answer(app, "rollback", v1, "--prepare")
    assert (again["release"], again["prepared_until"]) == (v1, prepared["prepared_until"])
    app.relman("switch", v1, check=True)
    status = app.json("status")
    assert (status["live"], status["prepared"]) == (v1, None)
    assert ("rolled_back", v1) in events(app)


def test_a_warm_instance_taken_over_expires_with_the_prepare_timeout(make_app, app_repo):
    """A warm instance taken over by `rollback --prepare` and never switched to is stopped
    at swap.prepare_timeout (prepare_expired), however long swap.keep_warm is; the live
    release serves on and a later rollback starts a new server."""
    app = make_app(swap={"keep_warm": 600, "prepare_timeout": 8})
    app.relman("deploy", "v1", check=True)
    v1 = app.json("status")["live"]
    release_version(app_repo, "v2")
    app.relman("deploy", "v2", check=True)
    v2 = app.json("status")["live"]
    warm = next(s["pid"] for s in app.json("status")["servers"] if s["state"] == "warm")
    assert answer(app, "rollback", v1, "--prepare")["release"] == v1
    assert candidate_pid(app, v1) == warm
    wait_until(lambda: ("prepare_expired", v1) in events(app), timeout=30,
               what="the prepared warm instance to expire")
    wait_until(lambda: not psutil.pid_exists(warm), timeout=30, what="it to stop")
    status = app.json("status")
    assert (status["live"], status["prepared"]) == (v2, None)
    assert [s["release"] for s in status["servers"]] == [v2]
    app.relman("rollback", check=True)
    assert app.json("status")["live"] == v1

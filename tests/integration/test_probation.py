"""The verification window and the warm window are measured from the switch, kept in
state/run.json: a daemon restart neither ends them nor starts them again."""

from __future__ import annotations

import json
import re
import time

from testing.git import release_version
from testing.waiting import wait_until
from tests.integration.test_supervision import live_pid, root_of, serving


def make_unhealthy(app, release: str) -> None:
    """From now on the release's health check answers 503 (the sample app's UNHEALTHY)."""
    (root_of(app) / "releases" / release / "UNHEALTHY").touch()


def test_probation_survives_a_daemon_restart(make_app, app_repo):
    """kill -9 of the daemon right after a deploy: the next daemon still rolls the release
    back when it starts failing its live check within the window."""
    app = make_app(swap={"live_check_interval": 0.3, "verify_window": 120,
                         "drain_timeout": 5, "stop_timeout": 5})
    app.relman("deploy", "v1", check=True)
    release_version(app_repo, "v2")
    app.relman("deploy", "v2", check=True)
    v1, v2 = (r["id"] for r in app.json("releases"))
    record = json.loads((root_of(app) / "state/run.json").read_text())["switch"]
    assert (record["release"], record["settled"]) == (v2, False)
    app.kill9()
    app.start()
    assert app.json("status")["live"] == v2, "adopted, not rolled back on restart"
    make_unhealthy(app, v2)
    wait_until(lambda: app.json("status")["live"] == v1, timeout=60, what="auto-rollback")
    assert serving(app, "v1")
    (rolled,) = [e for e in app.json("history") if e["event"] == "auto_rollback"]
    assert rolled["previous"] == v2
    wait_until(lambda: app.json("releases")[1]["state"] == "failed", timeout=30,
               what="the release to be marked failed")


def test_release_reached_by_auto_rollback_stays_settled_across_a_restart(make_app, app_repo):
    """v3 fails and is rolled back to v2; after a daemon restart v2 fails too: v2 was
    reached by an automatic rollback, so it is not rolled back again (no cascade to v1)."""
    app = make_app(swap={"live_check_interval": 0.2, "verify_window": 120,
                         "drain_timeout": 5, "stop_timeout": 5})
    app.relman("deploy", "v1", check=True)
    for version in ("v2", "v3"):
        release_version(app_repo, version)
        app.relman("deploy", version, check=True)
    _v1, v2, v3 = (r["id"] for r in app.json("releases"))
    make_unhealthy(app, v3)
    wait_until(lambda: app.json("status")["live"] == v2, timeout=60, what="auto-rollback")
    wait_until(lambda: app.json("status")["job"] is None, timeout=30, what="its end")
    record = json.loads((root_of(app) / "state/run.json").read_text())["switch"]
    assert (record["release"], record["settled"]) == (v2, True)
    app.kill9()
    app.start()
    make_unhealthy(app, v2)
    time.sleep(2)  # ten live checks' time, were v2 on probation
    assert app.json("status")["live"] == v2
    assert [e["previous"] for e in app.json("history") if e["event"] == "auto_rollback"] == [v3]


def test_a_probation_that_ran_out_stays_over_when_the_window_widens(make_app, app_repo):
    """The end of a probation is fixed at the switch: a reload that widens verify_window
    does not put a long-live release back on probation."""
    app = make_app(swap={"live_check_interval": 0.2, "verify_window": 1,
                         "drain_timeout": 5, "stop_timeout": 5})
    app.relman("deploy", "v1", check=True)
    release_version(app_repo, "v2")
    app.relman("deploy", "v2", check=True)
    v2 = app.json("releases")[1]["id"]
    time.sleep(1.5)  # past the one-second window
    app.config.write_text(app.config.read_text().replace("verify_window = 1\n",
                                                         "verify_window = 600\n"))
    wait_until(lambda: "config.reloaded" in app.log_tail(200), timeout=10, what="the reload")
    make_unhealthy(app, v2)
    time.sleep(2)  # ten live checks' time, were v2 on probation
    assert app.json("status")["live"] == v2
    assert not any(e["event"] == "auto_rollback" for e in app.json("history"))


def test_restarted_daemon_keeps_the_warm_server_only_for_what_is_left(make_app, app_repo):
    """The warm window is counted from the retire, not from the daemon's restart."""
    app = make_app(swap={"keep_warm": 8, "drain_timeout": 5, "stop_timeout": 5})
    app.relman("deploy", "v1", check=True)
    release_version(app_repo, "v2")
    app.relman("deploy", "v2", check=True)
    v1, v2 = (r["id"] for r in app.json("releases"))
    app.kill9()
    time.sleep(3)
    app.start()
    kept = re.search(rf"keeping {re.escape(v1)}\S* warm for the (\d+)s left", app.log_tail(200))
    assert kept is not None, app.log_tail(200)
    assert int(kept.group(1)) <= 5  # 8 s from the retire, 3 of them gone before the restart
    assert {s["release"]: s["state"] for s in app.json("status")["servers"]} == \
        {v1: "warm", v2: "live"}
    wait_until(lambda: [s["release"] for s in app.json("status")["servers"]] == [v2],
               timeout=30, what="the warm server to be stopped at the end of its window")


def test_restarted_daemon_stops_a_warm_server_whose_window_is_over(make_app, app_repo):
    """A daemon that comes back after the warm window ended stops that server instead of
    giving it a fresh window."""
    app = make_app(swap={"keep_warm": 3, "drain_timeout": 5, "stop_timeout": 5})
    app.relman("deploy", "v1", check=True)
    release_version(app_repo, "v2")
    app.relman("deploy", "v2", check=True)
    v1, _v2 = (r["id"] for r in app.json("releases"))
    v2_pid = live_pid(app)
    app.kill9()
    time.sleep(3.5)  # the window ends while no daemon runs
    app.start()  # reconcile() has stopped it before the control socket answers
    assert f"stopping {v1}" in app.log_tail(200)
    assert f"keeping {v1}" not in app.log_tail(200)
    assert len(app.json("status")["servers"]) == 1
    assert live_pid(app) == v2_pid, app.log_tail(300)
    assert serving(app, "v2")


def test_an_auto_rollback_cut_short_by_a_crash_still_fails_the_release(make_app, app_repo):
    """kill -9 of the daemon after an automatic rollback's switch, before it marked the bad
    release failed: the next daemon finishes the job (failed, stopped, never a target)."""
    app = make_app(swap={"live_check_interval": 0.2, "verify_window": 120,
                         "drain_timeout": 5, "stop_timeout": 5})
    app.relman("deploy", "v1", check=True)
    app.kill9()
    app.start(env={"RELMAN_TEST_CRASH_AT": "rollback:drained"})
    release_version(app_repo, "v2")
    app.relman("deploy", "v2", check=True)
    v1, v2 = (r["id"] for r in app.json("releases"))
    make_unhealthy(app, v2)
    app.proc.wait(60)  # the daemon kills itself once the rollback drained v2
    assert serving(app, "v1")
    assert app.json("releases")[1]["state"] == "built"  # what the crash left
    app.start()
    assert app.json("status")["live"] == v1
    assert app.json("releases")[1]["state"] == "failed"
    assert f"{v2}, rolled back from automatically, marked failed" in app.log_tail(200)
    assert [s["release"] for s in app.json("status")["servers"]] == [v1]
    refused = app.relman("rollback", v2)
    assert refused.returncode == 1
    assert "is failed: not a target" in refused.stderr

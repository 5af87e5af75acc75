"""The verification window and the warm window are measured from the switch, kept in
state/switch.json: a daemon restart neither ends them nor starts them again."""

from __future__ import annotations

import json
import time

from testing.git import release_version
from testing.waiting import wait_until
from tests.integration.test_supervision import live_pid, root_of, serving


def test_probation_survives_a_daemon_restart(make_app, app_repo):
    """kill -9 of the daemon right after a deploy: the next daemon still rolls the release
    back when it starts failing its live check within the window."""
    app = make_app(swap={"live_check_interval": 0.3, "verify_window": 60,
                         "drain_timeout": 5, "stop_timeout": 5})
    app.relman("deploy", "v1", check=True)
    release_version(app_repo, "v2", extra={"UNHEALTHY_AFTER": "3\n"})
    app.relman("deploy", "v2", check=True)
    v1, v2 = (r["id"] for r in app.json("releases"))
    record = json.loads((root_of(app) / "state/switch.json").read_text())
    assert (record["release"], record["settled"]) == (v2, False)
    app.kill9()
    app.start()
    assert app.json("status")["live"] == v2, "adopted, not rolled back on restart"
    wait_until(lambda: app.json("status")["live"] == v1, timeout=60, what="auto-rollback")
    assert serving(app, "v1")
    (rolled,) = [e for e in app.json("history") if e["event"] == "auto_rollback"]
    assert rolled["previous"] == v2
    wait_until(lambda: app.json("releases")[1]["state"] == "failed", timeout=30,
               what="the release to be marked failed")


def test_a_probation_that_ran_out_stays_over_when_the_window_widens(make_app, app_repo):
    """Past verify_window the switch is settled: a reload that widens the window does not
    put a long-live release back on probation."""
    app = make_app(swap={"live_check_interval": 0.2, "verify_window": 1,
                         "drain_timeout": 5, "stop_timeout": 5})
    app.relman("deploy", "v1", check=True)
    release_version(app_repo, "v2", extra={"UNHEALTHY_AFTER": "2\n"})
    app.relman("deploy", "v2", check=True)
    v2 = app.json("releases")[1]["id"]
    state = root_of(app) / "state/switch.json"
    wait_until(lambda: json.loads(state.read_text())["settled"], timeout=10,
               what="the switch to be settled")
    app.config.write_text(app.config.read_text().replace("verify_window = 1\n",
                                                         "verify_window = 600\n"))
    wait_until(lambda: "config.reloaded" in app.log_tail(200), timeout=10, what="the reload")
    time.sleep(3)  # v2 fails its health check from 2 s on: 15 live checks, all failing
    assert app.json("status")["live"] == v2
    assert not any(e["event"] == "auto_rollback" for e in app.json("history"))


def test_restarted_daemon_keeps_only_what_is_left_of_the_warm_window(make_app, app_repo):
    """A daemon that comes back after the previous release's keep_warm window ended stops
    that server instead of giving it a fresh window."""
    app = make_app(swap={"keep_warm": 3, "drain_timeout": 5, "stop_timeout": 5})
    app.relman("deploy", "v1", check=True)
    release_version(app_repo, "v2")
    app.relman("deploy", "v2", check=True)
    v1, v2 = (r["id"] for r in app.json("releases"))
    assert {s["release"]: s["state"] for s in app.json("status")["servers"]} == \
        {v1: "warm", v2: "live"}
    v2_pid = live_pid(app)
    app.kill9()
    time.sleep(3.5)  # the window ends while no daemon runs
    app.start()
    wait_until(lambda: [s["release"] for s in app.json("status")["servers"]] == [v2],
               timeout=30, what="the warm server to be stopped")
    assert live_pid(app) == v2_pid
    assert "stopping" in app.log_tail(200)
    assert serving(app, "v2")

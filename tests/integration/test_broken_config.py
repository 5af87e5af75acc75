"""Emergencies with a broken relman.toml (issue point 6): the daemon runs on its last good
config, and every command it serves, and those that read the app root, still work."""

from __future__ import annotations

import json

import pytest

from testing.git import release_version
from testing.waiting import wait_until
from tests.integration.test_supervision import serving

# Each break also asks health checks for a 5xx: a daemon that used the file on disk would
# fail every deploy, so a deploy that passes was made with the last good config.
EXPECT_5XX = 'path = "/health"\nexpect = [500, 599]'


@pytest.mark.parametrize(
    ("tail", "needle"),
    [("\n[swap]\ndrain_timeout = \n", "invalid TOML: Invalid value"),
     ("\n[swap]\nbogus = 1\n", "swap.bogus: unknown key"),
     ('\n[restart]\npolicy = "sometimes"\n', "restart.policy: must be one of")],
    ids=["toml-syntax", "unknown-key", "bad-value"],
)
def test_daemon_commands_work_while_the_config_is_broken(make_app, app_repo, tail, needle):
    """After an invalid edit the daemon keeps serving; status, deploy, rollback, restart,
    stop, start, prune, releases, history and logs work with one warning line and their
    usual exit status; check and nginx-config exit 2 naming the error; fixing the file
    ends the warnings."""
    app = make_app()
    app.relman("deploy", "v1", check=True)
    release_version(app_repo, "v2")
    good = app.config.read_text()
    assert 'path = "/health"' in good
    app.config.write_text(good.replace('path = "/health"', EXPECT_5XX) + tail)
    wait_until(lambda: needle in app.log_tail(200), timeout=15, what="the rejected reload")
    assert "config.reload_failed" in app.log_tail(200)

    def run(*args: str, code: int = 0) -> str:
        proc = app.relman(*args)
        assert proc.returncode == code, (args, proc.returncode, proc.stdout, proc.stderr)
        warnings = [line for line in proc.stderr.splitlines() if "warning" in line]
        assert len(warnings) == 1, (args, proc.stderr)
        assert warnings[0].startswith(f"relman: warning: {app.config}: "), warnings
        assert needle in warnings[0]
        assert "would not be loaded" in warnings[0]
        return proc.stdout

    assert json.loads(run("--json", "status"))["live"]
    assert serving(app, "v1")
    assert "deployed v2" in run("deploy", "v2")
    assert serving(app, "v2")
    assert "rolled back" in run("rollback")
    assert serving(app, "v1")
    assert "rolled back" in run("rollback")  # the release live before: forward to v2
    assert serving(app, "v2")
    run("rollback", "no-such-release", code=2)  # a refusal keeps its usual exit code
    assert "rolled back" in run("rollback")
    assert serving(app, "v1")
    assert "restarted" in run("restart")
    assert serving(app, "v1")
    run("stop")
    assert not serving(app, "v1")
    run("start")
    assert serving(app, "v1")
    run("prune")
    rows = json.loads(run("--json", "releases"))
    assert [(r["ref"], r["live"]) for r in rows] == [("v1", True), ("v2", False)]
    events = {e["event"] for e in json.loads(run("--json", "history"))}
    assert {"deployed", "rolled_back", "restarted", "stopped", "started"} <= events
    run("logs")

    for args in (["check"], ["nginx-config"]):
        proc = app.relman(*args)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert proc.stderr.startswith(f"relman: error: {app.config}: "), proc.stderr
        assert needle in proc.stderr
    assert serving(app, "v1")
    assert "config.reloaded" not in app.log_tail(1000)

    app.config.write_text(good)
    wait_until(lambda: "config.reloaded" in app.log_tail(200), timeout=15, what="the reload")
    proc = app.relman("status", check=True)
    assert "warning" not in proc.stderr
    assert app.proc.poll() is None

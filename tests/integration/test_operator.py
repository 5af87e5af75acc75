"""Operator commands against a real daemon (issue 5): start and stop, check, prune, history
filters, logs and logs -f."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from testing.git import release_version
from testing.unixhttp import http_get
from testing.waiting import wait_until
from tests.integration.test_supervision import root_of, serving


def test_stop_then_start(make_app):
    """`stop` takes the site down and says so in status and check; `start` brings the live
    release back, and the history records both."""
    app = make_app()
    app.relman("deploy", "v1", check=True)
    app.relman("stop", check=True)
    assert app.json("status")["live"] is None
    with pytest.raises((FileNotFoundError, ConnectionRefusedError)):
        http_get(root_of(app) / "run/app.sock")
    check = app.relman("check")
    assert check.returncode == 1
    assert "FAIL live socket" in check.stdout
    app.relman("start", check=True)
    assert serving(app, "v1")
    checks = {c["check"]: c["ok"] for c in json.loads(app.relman("--json", "check").stdout)}
    assert checks["live socket"]
    assert checks["layout"]
    assert checks["permissions"]
    events = [e["event"] for e in app.json("history")]
    assert events[-2:] == ["stopped", "started"]


def test_prune_keeps_live_target_running_and_shared_venvs(make_app, app_repo):
    """keep_releases = 1, four deploys: each deploy prunes by itself; the live release and
    the rollback target stay (the target also runs, kept warm), older releases and the venv
    only they used go."""
    app = make_app(app={"keep_releases": 1}, swap={"keep_warm": 60, "drain_timeout": 5})
    app.relman("deploy", "v1", check=True)
    (v1_venv,) = (r["venv"] for r in app.json("releases"))
    requirements = (app_repo / "requirements.txt").read_text()
    release_version(app_repo, "v2", extra={"requirements.txt": requirements + "six\n"})
    outputs = {}
    for ref in ("v2", "v3", "v4"):
        if ref != "v2":
            release_version(app_repo, ref)
        outputs[ref] = app.relman("deploy", ref, check=True).stdout
    v1, v2, v3, v4 = (e["release"] for e in app.json("history", "--event", "deployed"))
    assert "pruned" not in outputs["v2"]  # v1 is the rollback target
    # v3's deploy prunes v1, or (if v1's displaced warm server is still stopping, and so
    # still running) v4's does: either way with v1's own venv.
    assert "pruned 1 release(s) and 1 virtualenv(s) beyond keep_releases = 1" in \
        outputs["v3"] + outputs["v4"]
    wait_until(lambda: {s["release"]: s["state"] for s in app.json("status")["servers"]}
               == {v4: "live", v3: "warm"}, timeout=30, what="only v3 kept warm")
    # What was still stopping at the last deploy's prune goes now.
    assert set(app.json("prune")["releases"]) <= {v1, v2}
    events = app.json("history", "--event", "pruned")
    assert sorted(r for e in events for r in e["releases"]) == sorted([v1, v2])
    assert [v for e in events for v in e["venvs"]] == [Path(v1_venv).name]
    after = {r["id"]: r for r in app.json("releases")}
    assert set(after) == {v3, v4}
    assert after[v4]["live"]
    assert after[v3]["rollback_target"]
    root = root_of(app)
    assert sorted(p.name for p in (root / "releases").iterdir()) == sorted([v3, v4])
    assert [p.name for p in (root / "venvs").iterdir()] == [Path(after[v4]["venv"]).name]
    assert serving(app, "v4")
    app.relman("rollback", check=True)
    assert serving(app, "v3")


def test_history_filters(make_app, app_repo):
    """--event, --release, --since and -n narrow the audit log."""
    app = make_app()
    app.relman("deploy", "v1", check=True)
    release_version(app_repo, "v2")
    app.relman("deploy", "v2", check=True)
    app.relman("rollback", check=True)
    v1, v2 = (r["id"] for r in app.json("releases"))
    deployed = app.json("history", "--event", "deployed")
    assert [e["release"] for e in deployed] == [v1, v2]
    assert [e["event"] for e in app.json("history", "--release", v2)] == ["deployed"]
    assert len(app.json("history", "--since", "1")) == 3
    assert [e["event"] for e in app.json("history", "-n", "1")] == ["rolled_back"]
    assert all(e["switch_ms"] > 0 for e in app.json("history"))
    bad = app.relman("history", "--since", "soon")
    assert bad.returncode == 2
    assert "--since" in bad.stderr


def test_logs_of_a_release_and_follow(make_app, app_repo):
    """`logs RELEASE` prints that release's server output; `logs -f` prints lines as they
    are written."""
    app = make_app()
    app.relman("deploy", "v1", check=True)
    (v1,) = (r["id"] for r in app.json("releases"))
    log = root_of(app) / "log" / f"{v1}.log"
    assert "Listening at" in app.relman("logs", v1, check=True).stdout
    with app.follow("-n", "1") as wait_for:
        wait_for("")  # the last existing line
        with log.open("a") as f:
            f.write("a line written after logs -f started\n")
        wait_for("written after")
    unknown = app.relman("logs", "20990101T000000Z-deadbee")
    assert unknown.returncode == 2
    assert "20990101T000000Z-deadbee" in unknown.stderr


def test_rollback_to_a_release_that_cannot_boot_now(make_app, app_repo):
    """A rollback whose target fails its health gate (its database is down, say) exits 1,
    the live release keeps serving, and the target is not marked failed: it was known-good
    and the cause is elsewhere."""
    app = make_app(health={"path": "/health", "timeout": 3})
    app.relman("deploy", "v1", check=True)
    release_version(app_repo, "v2")
    app.relman("deploy", "v2", check=True)
    v1 = app.json("releases")[0]["id"]
    (root_of(app) / "releases" / v1 / "UNHEALTHY").write_text("the database is down\n")
    proc = app.relman("rollback")
    assert proc.returncode == 1, proc.stderr
    assert "not healthy within 3s" in proc.stderr
    assert serving(app, "v2")
    target = app.json("releases")[0]
    assert target["state"] == "built"
    assert target["rollback_target"]

"""Swaps under load through a real nginx fail no request (issue 3), and the nginx gates."""

from __future__ import annotations

import json
import re
import signal
import time
import urllib.request

import pytest

from testing.git import release_version
from testing.load import Load
from testing.needs import need_root
from testing.waiting import wait_until
from tests.integration.test_supervision import live_pid


def through(nginx) -> str:
    """GET / through the private nginx; the body."""
    with urllib.request.urlopen(nginx.url + "/", timeout=10) as reply:
        return reply.read().decode()


def deepest_queue(outputs: list[str]) -> int:
    depths = [int(d) for out in outputs for d in re.findall(r"deepest accept queue (\d+)", out)]
    return max(depths, default=0)


@pytest.mark.parametrize("kind", ["gunicorn", "uwsgi"])
def test_swaps_under_load_fail_no_request(stack, app_repo, kind):
    """Deploys, a rollback and a restart under concurrent load through nginx: zero failed
    requests, with the old server's accept queue non-empty at the switch."""
    app, nginx = stack(kind)
    app.relman("deploy", "v1", check=True)
    release_version(app_repo, "v2")
    release_version(app_repo, "v3")
    app.relman("deploy", "v2", check=True)  # warm the fetch so swaps dominate below
    outputs = []
    with Load(nginx.url, ("/slow?ms=100", "/"), concurrency=24, max_seconds=240) as load:
        time.sleep(1)
        for args in (["rollback"], ["deploy", "v2"], ["restart"], ["deploy", "v3"]):
            outputs.append(app.relman(*args, check=True).stdout)
        time.sleep(0.5)
    result = load.result
    assert result.sent > 200
    assert result.failed == 0, (result.statuses, result.errors, nginx.error_log_tail(20))
    assert deepest_queue(outputs) > 0, "the load must queue connections at the old listener"
    releases = app.json("releases")
    assert [r["ref"] for r in releases if r["live"]] == ["v3"]


def test_swaps_with_keep_alive_clients_fail_no_request(stack, app_repo):
    """Clients that keep their connection to nginx open across swaps (browsers do) see no
    error: nginx opens a new upstream connection per request (no upstream keepalive), so a
    stopping server never has an idle kept connection to drop (Provenance PR #196)."""
    app, nginx = stack("gunicorn")
    app.relman("deploy", "v1", check=True)
    release_version(app_repo, "v2")
    app.relman("deploy", "v2", check=True)
    with Load(nginx.url, ("/slow?ms=50", "/"), concurrency=16, max_seconds=240,
              keepalive=True) as load:
        time.sleep(1)
        for args in (["rollback"], ["deploy", "v2"], ["restart"], ["rollback"]):
            app.relman(*args, check=True)
        time.sleep(0.5)
    result = load.result
    assert result.failed == 0, (result.statuses, result.errors, nginx.error_log_tail(20))
    assert result.connections <= 2 * load.concurrency < result.sent, "connections reused"
    assert "prematurely closed" not in nginx.error_log_tail(200)


def test_preview_catches_a_socket_nginx_cannot_reach(stack, app_repo):
    """A socket nginx's workers may not connect to fails the preview: exit 1 naming the
    nginx preview, the live release untouched."""
    need_root("nginx workers as www-data, the socket owned by root")
    app, nginx = stack("gunicorn")
    app.relman("deploy", "v1", check=True)
    config = app.config.read_text().replace('socket_group = "www-data"',
                                            'socket_group = "root"')
    app.config.write_text(config)
    app.proc.send_signal(signal.SIGHUP)  # reload: the live server keeps its socket group
    wait_until(lambda: "config.reloaded" in app.log_tail(200), timeout=10, what="the reload")
    release_version(app_repo, "v2")
    proc = app.relman("deploy", "v2")
    assert proc.returncode == 1, proc.stderr
    assert "preview through nginx failed" in proc.stderr
    assert "502" in proc.stderr
    with Load(nginx.url, ("/",), concurrency=1, max_requests=5) as load:
        time.sleep(0.5)
    assert load.result.failed == 0


def test_nginx_serves_each_deploy(stack, app_repo):
    """Through nginx, each deploy's version is what users get right after it returns."""
    import urllib.request

    app, nginx = stack("gunicorn")
    for version in ("v1", "v2"):
        if version != "v1":
            release_version(app_repo, version)
        app.relman("deploy", version, check=True)
        with urllib.request.urlopen(nginx.url + "/", timeout=10) as r:
            assert r.read().decode().startswith(f"sample {version}")


def test_warm_rollback_is_a_switch_only(stack, app_repo):
    """With swap.keep_warm, a rollback inside the window starts no process: the old server,
    drained but running, takes app.sock back, under load with no failed request; after the
    window it is stopped."""
    app, nginx = stack("gunicorn", swap={"keep_warm": 30, "drain_timeout": 10})
    app.relman("deploy", "v1", check=True)
    v1_pid = live_pid(app)
    release_version(app_repo, "v2")
    app.relman("deploy", "v2", check=True)
    servers = {s["release"]: s for s in app.json("status")["servers"]}
    assert len(servers) == 2, servers
    v1 = app.json("releases")[0]["id"]
    assert servers[v1]["pid"] == v1_pid
    assert servers[v1]["state"] == "warm"
    app.relman("restart", check=True)  # the live release's old instance is not kept warm
    states = sorted((s["release"] == v1, s["state"]) for s in app.json("status")["servers"])
    assert states == [(False, "live"), (True, "warm")], states
    with Load(nginx.url, ("/slow?ms=50", "/"), concurrency=16, max_seconds=120) as load:
        time.sleep(0.5)
        lines = app.relman("--json", "rollback", check=True).stdout.splitlines()
        time.sleep(0.5)
    assert load.result.failed == 0, (load.result.statuses, load.result.errors)
    messages = [json.loads(line).get("message", "") for line in lines]
    assert any("still warm: switching without a restart" in m for m in messages), messages
    assert json.loads(lines[-1])["switch_ms"] > 0
    assert live_pid(app) == v1_pid
    assert through(nginx).startswith("sample v1")


def test_warm_server_is_stopped_after_the_window(stack, app_repo):
    """keep_warm is a bounded window: past it the previous release's server is stopped."""
    app, _nginx = stack("gunicorn", swap={"keep_warm": 1, "drain_timeout": 5})
    app.relman("deploy", "v1", check=True)
    release_version(app_repo, "v2")
    app.relman("deploy", "v2", check=True)
    wait_until(lambda: len(app.json("status")["servers"]) == 1, timeout=30,
               what="the warm server to be stopped")
    proc = app.relman("rollback", check=True)
    assert "still warm" not in proc.stdout


def test_named_rollback_skips_releases_in_between(stack, app_repo):
    """`relman rollback ID` swaps to that release, past newer known-good ones."""
    app, nginx = stack("gunicorn")
    for ref in ("v1", "v2", "v3"):
        if ref != "v1":
            release_version(app_repo, ref)
        app.relman("deploy", ref, check=True)
    v1 = app.json("releases")[0]["id"]
    app.relman("rollback", v1, check=True)
    assert app.json("status")["live"] == v1
    assert through(nginx).startswith("sample v1")

"""Swaps under load through a real nginx fail no request (issue 3), and the nginx gates."""

from __future__ import annotations

import os
import re
import signal
import time

import pytest

from testing.git import release_version
from testing.load import Load


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


def test_preview_catches_a_socket_nginx_cannot_reach(stack, app_repo):
    """A socket nginx's workers may not connect to fails the preview: exit 1 naming the
    nginx preview, the live release untouched."""
    if os.geteuid() != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("CI runs as root so that nginx workers run as www-data")
        pytest.skip("needs root: nginx workers as www-data, the socket owned by root")
    app, nginx = stack("gunicorn")
    app.relman("deploy", "v1", check=True)
    config = app.config.read_text().replace('socket_group = "www-data"',
                                            'socket_group = "root"')
    app.config.write_text(config)
    app.proc.send_signal(signal.SIGHUP)  # reload: the live server keeps its socket group
    time.sleep(1)
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

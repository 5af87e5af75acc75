"""Deploy journeys with a real daemon, git, uv and gunicorn / uWSGI (issue 2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from testing.git import release_version
from testing.unixhttp import http_get
from testing.waiting import wait_until


def get(sock: Path, path: str = "/") -> str:
    """GET *path* over a unix socket with HTTP; returns the body of a 200."""
    status, body = http_get(sock, path)
    assert status == 200, (status, body)
    return body


def test_deploy_two_refs_gunicorn(make_app, app_repo):
    """v1 then v2 are served from run/app.sock; releases, status and history tell the story."""
    app = make_app()
    root = Path(app.config.with_suffix(""))
    out = app.relman("deploy", "v1", check=True)
    assert "[healthy]" in out.stdout
    assert "[switched]" in out.stdout
    assert get(root / "run/app.sock").startswith("sample v1")
    release_version(app_repo, "v2")
    app.relman("deploy", "v2", check=True)
    assert get(root / "run/app.sock").startswith("sample v2")

    releases = app.json("releases")
    assert [r["ref"] for r in releases] == ["v1", "v2"]
    assert [r["live"] for r in releases] == [False, True]
    assert releases[0]["rollback_target"]
    assert all(r["state"] == "built" and r["known_good"] for r in releases)
    assert releases[0]["venv"] == releases[1]["venv"], "unchanged deps share one venv"
    live = releases[1]["id"]
    assert (root / "current").resolve() == (root / "releases" / live).resolve()

    # The health gate passes once one worker answers; gunicorn may still be forking the other.
    wait_until(lambda: app.json("status")["servers"][0]["workers"] == 2, timeout=30,
               what="gunicorn's two workers")
    status = app.json("status")
    assert status["live"] == live
    assert status["health"]["healthy"]
    (server,) = status["servers"]
    assert server["live"]
    assert server["workers"] == 2

    events = [(e["event"], e.get("release")) for e in app.json("history")]
    assert events == [("deployed", releases[0]["id"]), ("deployed", live)]
    assert all(e["who"] for e in app.json("history"))


def test_release_tree_is_an_export_with_shared_links(make_app, app_repo):
    """A release is a git archive export (no .git) with build.shared linked from shared/."""
    app = make_app(build={"shared": ["media/"], "commands": ["python -c \"open('built','w')\""]})
    root = Path(app.config.with_suffix(""))
    app.relman("deploy", "v1", check=True)
    (rid,) = [r["id"] for r in app.json("releases")]
    tree = root / "releases" / rid
    assert not (tree / ".git").exists()
    assert (tree / "media").is_symlink()
    assert (tree / "media").resolve() == (root / "shared" / "media").resolve()
    assert (tree / "built").exists(), "build.commands ran in the release dir"
    assert (root / "repo" / "HEAD").exists(), "the mirror is bare"


@pytest.mark.parametrize(
    ("server", "reply"),
    [
        ({"kind": "uwsgi", "wsgi_file": "wsgi.py", "protocol": "http"}, "sample v1"),
        ({"kind": "uwsgi", "app": "app:application", "protocol": "http"}, "sample v1"),
        ({"kind": "command", "command": [".venv/bin/gunicorn", "--bind", "unix:{socket}",
                                         "app:server"]}, "sample v1"),
    ],
    ids=["uwsgi-wsgi-file", "uwsgi-module", "command"],
)
def test_other_server_kinds(make_app, server, reply):
    """uWSGI (wsgi_file or module) and a plain command with {socket} serve the release."""
    app = make_app(server=server)
    root = Path(app.config.with_suffix(""))
    app.relman("deploy", "v1", check=True)
    assert get(root / "run/app.sock").startswith(reply)


def test_uwsgi_protocol_health_check(make_app):
    """With protocol = "uwsgi" the health gate speaks the uwsgi protocol to the socket."""
    app = make_app(server={"kind": "uwsgi", "wsgi_file": "wsgi.py", "protocol": "uwsgi"})
    out = app.relman("deploy", "v1", check=True)
    assert "answers /health" in out.stdout
    assert app.json("status")["health"]["healthy"]


def test_socket_mode_and_group(make_app):
    """The server's socket gets server.socket_mode and server.socket_group, never 0777."""
    import grp
    import os

    group = grp.getgrgid(os.getgid()).gr_name
    app = make_app(server={"kind": "gunicorn", "app": "app:server", "socket_mode": "0660",
                           "socket_group": group})
    root = Path(app.config.with_suffix(""))
    app.relman("deploy", "v1", check=True)
    st = (root / "run/app.sock").stat()
    assert st.st_mode & 0o777 == 0o660
    assert st.st_gid == grp.getgrnam(group).gr_gid


def test_server_output_goes_to_release_log(make_app):
    """The app server's output is captured to log/<id>.log, and `relman logs` shows it."""
    app = make_app()
    app.relman("deploy", "v1", check=True)
    out = app.relman("logs", check=True).stdout
    assert "Booting worker" in out or "Listening at" in out


def test_json_output_everywhere(make_app):
    """--json gives parseable output for the read commands."""
    app = make_app()
    app.relman("deploy", "v1", check=True)
    for command in ("releases", "status", "history"):
        json.loads(app.relman("--json", command, check=True).stdout)
    lines = app.relman("--json", "restart", check=True).stdout.splitlines()
    assert all(json.loads(line) for line in lines)

"""What relman keeps from other local users and out of its output: the mirror, credentials
in app.repo, a candidate's socket before its mode is set (issue "never lose a process",
point 7)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from testing.git import release_version
from tests.integration.test_deploy import get

TOKEN = "s3cr3t-t0ken"


def root_of(app) -> Path:
    return Path(app.config.with_suffix(""))


def too_open(tree: Path) -> list[str]:
    """Entries under *tree* (itself included) that other users may read, write or enter,
    or whose group may write. Objects a local clone hard-linked from the source repository
    share its inodes, and so its modes: they are skipped (repo/ itself keeps them closed)."""
    found = []
    for path in [tree, *tree.rglob("*")]:
        st = path.lstat()
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o027 and not stat.S_ISLNK(st.st_mode) and (
                stat.S_ISDIR(st.st_mode) or st.st_nlink == 1):
            found.append(f"{oct(mode)} {path.relative_to(tree.parent)}")
    return found


def test_mirror_stays_private(make_app, app_repo):
    """repo/ (the history and app.repo with any token) is never open to other users: not
    after the first clone, not after a fetch; a mirror left 0755 by an older relman is
    closed at its next fetch."""
    app = make_app()
    repo = root_of(app) / "repo"
    app.relman("deploy", "v1", check=True)
    assert too_open(repo) == []
    repo.chmod(0o755)
    release_version(app_repo, "v2")
    app.relman("deploy", "v2", check=True)
    assert too_open(repo) == []
    assert stat.S_IMODE(repo.stat().st_mode) == 0o750


def test_credentials_in_app_repo_are_never_shown_or_recorded(make_app):
    """A token in app.repo reaches git only: the failing deploy's output, the history, the
    daemon's log, the fetch log, status and check show `https://***@host`."""
    app = make_app(start=False)
    url = f"https://ci:{TOKEN}@127.0.0.1:1/acme/shop.git"
    text = app.config.read_text()
    app.config.write_text("\n".join(f'repo = "{url}"' if line.startswith("repo = ") else line
                                    for line in text.splitlines()) + "\n")
    app.start(env={"no_proxy": "*", "NO_PROXY": "*"})
    proc = app.relman("deploy", "v1")
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert "fetching https://***@127.0.0.1:1/acme/shop.git failed" in proc.stderr
    root = root_of(app)
    shown = {
        "deploy output": proc.stdout + proc.stderr,
        "history.jsonl": (root / "log/history.jsonl").read_text(),
        "fetch.log": (root / "log/fetch.log").read_text(),
        "daemon log": app.log.read_text(),
        "history": app.relman("history").stdout,
        "status": app.relman("--json", "status").stdout,
        "check": app.relman("check").stdout,
    }
    assert "127.0.0.1:1/acme/shop.git" in shown["fetch.log"]
    assert "***@127.0.0.1" in shown["history.jsonl"]
    leaks = [name for name, text in shown.items() if TOKEN in text or "ci:" in text]
    assert leaks == []


BINDMODE = "bindmode"  # written by each server: its socket's mode right after the bind
COMMAND_SERVER = f'''"""Reports its socket's mode as soon as it is bound, then serves."""
import http.server, os, socketserver, sys

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"bindmode server\\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def address_string(self):
        return "unix"

server = socketserver.UnixStreamServer(sys.argv[1], Handler)
with open("{BINDMODE}", "w") as f:
    f.write(oct(os.stat(sys.argv[1]).st_mode & 0o777))
server.serve_forever()
'''
GUNICORN_CONF = f'''import os

def when_ready(server):  # after the bind, before any worker
    with open("{BINDMODE}", "w") as f:
        f.write(oct(os.stat(os.environ["RELMAN_SOCKET"]).st_mode & 0o777))
'''
SERVERS = {
    "gunicorn": {"kind": "gunicorn", "app": "app:server", "args": ["-c", "bindmode_conf.py"]},
    "uwsgi": {"kind": "uwsgi", "wsgi_file": "wsgi.py",
              "args": ["--exec-pre-app", f'sh -c \'stat -c 0o%a "$RELMAN_SOCKET" > {BINDMODE}\'']},
    "command": {"kind": "command", "command": ["python", "bindmode_server.py", "{socket}"]},
}


@pytest.mark.parametrize("kind", list(SERVERS))
def test_socket_is_never_wider_than_socket_mode(make_app, app_repo, kind):
    """From its bind on, a candidate's socket lets no one connect whom server.socket_mode
    does not let (it was 0777 under gunicorn until relman's chmod after the health check),
    even under a daemon whose umask is 0; socket_mode applies once it is healthy."""
    release_version(app_repo, "v1-bindmode", extra={"bindmode_server.py": COMMAND_SERVER,
                                                    "bindmode_conf.py": GUNICORN_CONF})
    old = os.umask(0)
    try:
        app = make_app(server={**SERVERS[kind], "socket_mode": "0660"})
    finally:
        os.umask(old)
    app.relman("deploy", "v1-bindmode", check=True)
    root = root_of(app)
    (release,) = (root / "releases").iterdir()
    at_bind = int((release / BINDMODE).read_text(), 8)
    assert at_bind & 0o007 == 0, f"{oct(at_bind)}: other users could connect"
    assert at_bind & 0o222 & ~0o660 == 0
    assert stat.S_IMODE((root / "run/app.sock").stat().st_mode) == 0o660
    assert get(root / "run/app.sock")

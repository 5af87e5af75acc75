"""Corrupt or foreign state never stops the daemon: an unreadable manifest of the live
release, `current` as a directory (DESIGN section 6; issue "never lose a process", point 4)."""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import pytest

from testing.waiting import wait_until
from tests.integration.test_supervision import live_pid, root_of, serving


def truncate_manifest(app, release: str) -> Path:
    """Cut the release's manifest short, as a crash of a non-atomic writer would."""
    path = root_of(app) / "state" / "releases" / f"{release}.json"
    path.write_text(path.read_text()[:40])
    return path


def set_aside_copies(path: Path) -> list[Path]:
    return sorted(path.parent.glob(f"{path.name}.corrupt-*"))


def deployed_v1(make_app):
    app = make_app()
    app.relman("deploy", "v1", check=True)
    (release,) = app.json("releases")
    return app, release


def test_prune_keeps_the_live_release_and_its_venv_when_its_manifest_is_unreadable(make_app):
    """A release whose manifest cannot be read counts as referenced: prune removes neither
    its tree nor its virtualenv, and the server keeps serving."""
    app, release = deployed_v1(make_app)
    truncate_manifest(app, release["id"])
    app.relman("prune", check=True)
    assert Path(release["venv"], "bin", "python").exists()
    assert (root_of(app) / "releases" / release["id"] / "app.py").is_file()
    assert serving(app, "v1")


def test_restart_with_an_unreadable_live_manifest(make_app):
    """`relman restart` sets the unreadable manifest aside, rebuilds a minimal one from the
    release tree, and starts fresh processes (no exit 70)."""
    app, release = deployed_v1(make_app)
    old_pid = live_pid(app)
    path = truncate_manifest(app, release["id"])
    proc = app.relman("restart")
    assert proc.returncode == 0, (proc.stdout, proc.stderr, app.log_tail())
    assert live_pid(app) not in (None, old_pid)
    assert serving(app, "v1")
    (aside,) = set_aside_copies(path)
    assert len(aside.read_text()) == 40, "the unreadable file is kept for a post-mortem"
    rebuilt = json.loads(path.read_text())
    assert (rebuilt["id"], rebuilt["state"], rebuilt["venv"]) == (
        release["id"], "built", release["venv"])
    assert release["sha"].startswith(rebuilt["sha"]), "the short sha of its id"
    events = [e["event"] for e in app.json("history")]
    assert "state_set_aside" in events
    assert "manifest_rebuilt" in events


def test_restart_fails_cleanly_when_the_live_manifest_cannot_be_rebuilt(make_app):
    """With the manifest unreadable and no .venv link to rebuild it from, `relman restart`
    exits 1 with a clear error (no exit 70), and the running server keeps serving."""
    app, release = deployed_v1(make_app)
    truncate_manifest(app, release["id"])
    (root_of(app) / "releases" / release["id"] / ".venv").unlink()
    proc = app.relman("restart")
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert "cannot be rebuilt: it has no .venv link" in proc.stderr
    assert "internal error" not in proc.stderr
    assert serving(app, "v1")


def test_a_crashed_server_is_restarted_with_an_unreadable_live_manifest(make_app):
    """A crash of the live server is followed by a restart even when its release's manifest
    cannot be read."""
    app, release = deployed_v1(make_app)
    truncate_manifest(app, release["id"])
    old = live_pid(app)
    os.killpg(old, signal.SIGKILL)
    wait_until(lambda: live_pid(app) not in (None, old), timeout=30, what="a new live pid")
    assert serving(app, "v1")


@pytest.mark.parametrize("how", ["kill9", "stop"])
def test_the_next_daemon_serves_the_live_release_with_an_unreadable_manifest(make_app, how):
    """A daemon (re)started with the live release's manifest truncated starts, and serves
    that release: the running server adopted (kill -9 before) or started anew (after a
    clean stop, which stops the servers)."""
    app, release = deployed_v1(make_app)
    getattr(app, how)()
    path = truncate_manifest(app, release["id"])
    app.start()
    wait_until(lambda: serving(app, "v1"), timeout=30, what="v1 to serve")
    assert app.json("status")["live"] == release["id"]
    assert set_aside_copies(path)
    (listed,) = app.json("releases")
    assert (listed["id"], listed["live"]) == (release["id"], True)
    assert Path(listed["venv"]) == Path(release["venv"])


@pytest.mark.parametrize("how", ["kill9", "stop", "stop-history-clue", "stop-no-clue"])
def test_current_as_a_directory_never_stops_the_daemon(make_app, how):
    """`current` replaced by a directory is set aside (current.corrupt-<ts>), and relinked
    to the live release, known from the running server, else from run/app.sock, else from
    the history; with no clue at all it stays absent, and the daemon starts either way."""
    app, release = deployed_v1(make_app)
    getattr(app, how.split("-")[0])()
    root = root_of(app)
    current = root / "current"
    current.unlink()
    current.mkdir()
    (current / "left-by-another-tool").write_text("x\n")
    if how.endswith("clue"):
        (root / "run" / "app.sock").unlink()
    if how == "stop-no-clue":
        (root / "log" / "history.jsonl").unlink()
    app.start()
    (aside,) = sorted(root.glob("current.corrupt-*"))
    assert (aside / "left-by-another-tool").is_file()
    if how == "stop-no-clue":
        assert not os.path.lexists(current)
        assert app.json("status")["live"] is None
        app.relman("rollback", release["id"], check=True)  # the operator says which
    else:
        assert os.readlink(current) == f"releases/{release['id']}"
    wait_until(lambda: serving(app, "v1"), timeout=30, what="v1 to serve")
    assert app.json("status")["live"] == release["id"]


def test_current_made_a_directory_under_a_running_daemon_is_set_aside(make_app):
    """`current` replaced by a directory while the daemon runs is set aside and linked
    again to the live release, so a crash of its server is still followed by a restart."""
    app, release = deployed_v1(make_app)
    root = root_of(app)
    current = root / "current"
    current.unlink()
    current.mkdir()
    wait_until(lambda: current.is_symlink(), timeout=20, what="current to be a link again")
    assert os.readlink(current) == f"releases/{release['id']}"
    assert len(list(root.glob("current.corrupt-*"))) == 1
    old = live_pid(app)
    os.killpg(old, signal.SIGKILL)
    wait_until(lambda: live_pid(app) not in (None, old), timeout=30, what="a new live pid")
    assert serving(app, "v1")


def test_a_torn_history_line_loses_no_later_entry(make_app):
    """A crash mid-append left a torn last line in the history: `relman history` skips it
    and the next entry starts on a line of its own."""
    app, _release = deployed_v1(make_app)
    history = root_of(app) / "log" / "history.jsonl"
    with history.open("a") as f:
        f.write('{"event": "depl')
    app.relman("restart", check=True)
    events = [e["event"] for e in app.json("history")]
    assert events[-1] == "restarted"
    assert history.read_text().splitlines()[-2] == '{"event": "depl'
    shutil.copy(history, history.with_suffix(".copy"))  # readers never change the file
    assert app.relman("history", check=True).stdout
    assert history.read_bytes() == history.with_suffix(".copy").read_bytes()

"""contrib/logrotate/relman, run by the real logrotate against a running server's log."""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import subprocess
from pathlib import Path

from testing.needs import skip_or_fail
from tests.integration.test_deploy import get
from tests.integration.test_supervision import root_of

CONTRIB = Path(__file__).resolve().parents[2] / "contrib" / "logrotate" / "relman"


def logrotate() -> str:
    found = shutil.which("logrotate") or shutil.which("logrotate", path="/usr/sbin:/sbin")
    if found is None:
        skip_or_fail("logrotate is not installed", "install it (.ci/system-deps)")
    return found


def rotate(root: Path, tmp_path: Path) -> None:
    """Force one rotation of <root>/log/*.log with the shipped config, made to fit: this
    app root instead of /srv/*, and this user in `su`."""
    user = pwd.getpwuid(os.getuid()).pw_name
    group = grp.getgrgid(os.getgid()).gr_name
    text = CONTRIB.read_text()
    assert "/srv/*/log/*.log {" in text
    assert "su deploy deploy" in text
    text = text.replace("/srv/*/log/*.log", f"{root}/log/*.log")
    text = text.replace("su deploy deploy", f"su {user} {group}")
    config = tmp_path / "logrotate.conf"
    config.write_text(text)
    config.chmod(0o644)  # logrotate ignores a config others may write
    proc = subprocess.run([logrotate(), "--force", "--state", str(tmp_path / "state"),
                           str(config)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_copytruncate_under_a_running_server(make_app, tmp_path):
    """logrotate's copytruncate with the shipped config: the old lines go to .1, the running
    server's next line starts the truncated file (append mode: no NUL hole), `relman logs`
    shows it, `logs -f` follows across the truncation, and history.jsonl is left whole."""
    logrotate()
    app = make_app()
    app.relman("deploy", "v1", check=True)
    root = root_of(app)
    (v1,) = (r["id"] for r in app.json("releases"))
    log = root / "log" / f"{v1}.log"
    get(root / "run/app.sock", "/log?line=written-before-rotation")
    history = (root / "log/history.jsonl").read_bytes()
    # Not -n 1: under load a gunicorn worker's boot line may come after the line asked for.
    with app.follow("-n", "50") as wait_for:
        wait_for("written-before-rotation")
        rotate(root, tmp_path)
        assert "written-before-rotation" in (root / "log" / f"{v1}.log.1").read_text()
        assert "written-before-rotation" not in log.read_text()
        get(root / "run/app.sock", "/log?line=written-after-rotation")
        wait_for("written-after-rotation")
    data = log.read_bytes()
    assert b"\0" not in data, "the server kept writing at its old offset"
    assert data.startswith(b"written-after-rotation"), data[:200]
    assert "written-after-rotation" in app.relman("logs", v1, check=True).stdout
    assert (root / "log/history.jsonl").read_bytes() == history
    assert not list((root / "log").glob("history.jsonl.*"))

"""The daemon imports what supervision needs; what only a deploy needs waits for a deploy
(issue 11: an idle daemon at or below supervisord's memory)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from testing.daemon import write_config

# Imported inside the functions of a deploy: git (and untar: tarfile, bz2's and lzma's
# tar modes), venvs (uv, pip), build (build and release commands).
DEPLOY_ONLY = ("relman.releases.build", "relman.releases.git", "relman.releases.untar",
               "relman.releases.venvs", "tarfile")
# Never imported by the daemon: importlib.metadata brings the email package, zipfile and csv
# (2 MiB of idle RSS); the server kinds read a dist-info's METADATA by hand.
# Only on an error path: difflib (a config key's "did you mean"), tempfile (a crash log).
NEVER = ("importlib.metadata", "email", "difflib", "tempfile")


def _modules_after(code: str, *argv: str) -> set[str]:
    """The modules a fresh interpreter holds after *code* (None entries left out)."""
    out = subprocess.run([sys.executable, "-c", f"{code}\nimport sys\n"
                          "print('\\n'.join(sorted(k for k, v in sys.modules.items() if v)))",
                          *argv], capture_output=True, text=True, check=True).stdout
    return set(out.split())


def test_the_daemon_leaves_deploy_only_modules_out() -> None:
    """Importing the daemon and its logging, as `relman daemon` does, imports none of the
    deploy-only modules."""
    loaded = _modules_after("import relman.logs, relman.daemon")
    assert "relman.daemon" in loaded
    assert sorted(loaded.intersection(DEPLOY_ONLY)) == []
    assert sorted(loaded.intersection(NEVER)) == []


def test_the_daemon_command_keeps_rich_and_click_out(tmp_path: Path) -> None:
    """`relman daemon` runs without rich, installed or not (structlog would import it for
    console tracebacks; the daemon writes key=value lines or JSON), and without click and
    the other commands (relman.cli.daemon): here the daemon gets as far as finding its app
    root not initialised."""
    config = write_config(tmp_path / "a.toml", name="a", repo=tmp_path, root=tmp_path / "a",
                          server={"kind": "gunicorn", "app": "app:server"})
    code = ("import sys, contextlib\nfrom relman.cli import main\n"
            "with contextlib.suppress(SystemExit):\n    main()")
    loaded = _modules_after(code, "--config", str(config), "daemon")
    assert "relman.daemon" in loaded
    assert "structlog" in loaded
    assert sorted(m for m in loaded if m.split(".")[0] in ("rich", "click")) == []
    assert "relman.cli.commands" not in loaded
    assert sorted(loaded.intersection(DEPLOY_ONLY + NEVER)) == []

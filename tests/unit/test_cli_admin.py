"""The CLI as an admin types it (issue 11): shell completion, and hints that name the app's
systemd unit instead of a placeholder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from testing.daemon import write_config


def relman(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "relman", *args], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, check=False,
                          timeout=60)


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_prints_clicks_script(shell: str) -> None:
    result = relman("completion", shell)
    assert result.returncode == 0, result.stderr
    assert "_RELMAN_COMPLETE" in result.stdout


def test_completion_completes_commands_and_options() -> None:
    """The script calls relman back with _RELMAN_COMPLETE set: commands, then options."""
    env = {"_RELMAN_COMPLETE": "bash_complete", "COMP_WORDS": "relman dep", "COMP_CWORD": "1"}
    assert relman(env=env).stdout.split() == ["plain,deploy"]
    env = {**env, "COMP_WORDS": "relman scale --", "COMP_CWORD": "2"}
    assert "plain,--reset" in relman(env=env).stdout.split()


def test_an_unknown_shell_exits_2() -> None:
    result = relman("completion", "tcsh")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr


def test_hints_name_the_apps_unit(tmp_path: Path) -> None:
    """A daemon that is not running: the hint names relman@shop, the unit of
    /etc/relman/shop.toml, not relman@APP."""
    config = write_config(tmp_path / "shop.toml", name="shop", repo=tmp_path / "repo",
                          root=tmp_path / "root")
    (tmp_path / "root" / "run").mkdir(parents=True)
    result = relman("--config", str(config), "status")
    assert result.returncode == 3, result.stderr
    assert "systemctl start relman@shop" in result.stderr
    assert "relman@APP" not in result.stderr

"""The environment of a release's programs (release_env, login_env), `relman run`'s checks,
and ssh-command's refusal of run and scale."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from relman import oneoff
from relman.cli.commands import cli
from relman.config import Config, ServerConfig, load_config
from relman.errors import CommandNotFound, UsageError
from relman.releases import AppRoot, Manifest
from relman.transaction.release_env import (
    SERVICE_PATH,
    TRACKING_TAGS,
    login_env,
    release_cwd,
    release_env,
)
from tests.unit.test_broken_config import run

RELEASE = "20261123T031500Z-1a2b3c4"


@pytest.fixture
def root(tmp_path: Path) -> AppRoot:
    root = AppRoot(tmp_path / "shop")
    root.create()
    (root.shared / "app.env").write_text("FROM_FILE=1\nBOTH=file\n")
    return root


@pytest.fixture
def config(tmp_path: Path, root: AppRoot) -> Config:
    path = tmp_path / "relman.toml"
    path.write_text(f'[app]\nname = "shop"\nrepo = "/r"\nroot = "{root.root}"\n'
                    '[server]\nkind = "gunicorn"\napp = "app:server"\nenv_file = "app.env"\n'
                    'env = { FROM_CONFIG = "1", BOTH = "config" }\n')
    return load_config(path)


def manifest() -> Manifest:
    return Manifest(id=RELEASE, ref="v1", sha="1a2b3c4" * 5, who="alice", created=0.0,
                    venv="/srv/shop/venvs/abc")


def test_release_env(config: Config, root: AppRoot) -> None:
    """The venv leads PATH once, the env file wins over server.env, which wins over the
    base; the release and process are named; no tracking tag survives."""
    base = {"PATH": "/usr/bin:/srv/shop/venvs/abc/bin", "BOTH": "base", "KEPT": "yes"}
    env = release_env(config, root, manifest(), base | dict.fromkeys(TRACKING_TAGS, "x"),
                      process="worker")
    assert env["PATH"] == "/srv/shop/venvs/abc/bin:/usr/bin"
    assert env["VIRTUAL_ENV"] == "/srv/shop/venvs/abc"
    assert (env["FROM_FILE"], env["FROM_CONFIG"], env["BOTH"], env["KEPT"]) == (
        "1", "1", "file", "yes")
    assert (env["RELMAN_RELEASE"], env["RELMAN_PROCESS"]) == (RELEASE, "worker")
    assert not TRACKING_TAGS & set(env)
    assert release_cwd(root, manifest()) == root.release_dir(RELEASE).resolve()


def test_release_env_of_other_settings(config: Config, root: AppRoot) -> None:
    """A [server] table passed in (a release's recorded settings) replaces the config's."""
    server = ServerConfig(kind="gunicorn", app="app:server", env={"OLD": "1"})
    env = release_env(config, root, manifest(), {}, process="run", server=server)
    assert env["OLD"] == "1"
    assert not {"FROM_FILE", "FROM_CONFIG"} & set(env)


def test_login_env() -> None:
    """`relman run` keeps who the user is, the locale and the terminal, and the PATH
    systemd gives the daemon; nothing else of the caller's shell."""
    env = login_env({"HOME": "/home/a", "TERM": "xterm", "LC_ALL": "C.UTF-8", "PATH": "/opt/x",
                     "PYTHONPATH": "/p", "VIRTUAL_ENV": "/v", "GIT_DIR": "/g", "RELMAN_JOB": "j"})
    assert env == {"HOME": "/home/a", "TERM": "xterm", "LC_ALL": "C.UTF-8",
                   "PATH": SERVICE_PATH}


def test_run_refuses_another_user(root: AppRoot, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the app root's owner may run a command: its files stay the daemon's."""
    owner = root.state.stat().st_uid
    monkeypatch.setattr(os, "geteuid", lambda: owner + 1)
    with pytest.raises(UsageError, match=r"^run: run it as \S+, the owner of "):
        oneoff._check_user(root)


def test_find_program(tmp_path: Path) -> None:
    """A name is looked up on PATH only; a name with a slash is relative to the release."""
    (tmp_path / "tool").write_text("#!/bin/sh\n")
    (tmp_path / "tool").chmod(0o755)
    assert oneoff.find_program("tool", str(tmp_path), Path("/")) == str(tmp_path / "tool")
    assert oneoff.find_program("./tool", "", tmp_path) == str(tmp_path / "./tool")
    with pytest.raises(CommandNotFound):
        oneoff.find_program("tool", "/nonexistent", tmp_path)
    with pytest.raises(CommandNotFound):
        oneoff.find_program("bin/tool", str(tmp_path), tmp_path)


@pytest.mark.parametrize("command", ["relman run -- id", "run python manage.py shell",
                                     "relman scale worker=3", "scale --reset"])
def test_ssh_command_refuses_run_and_scale(capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch, config: Config,
                                           command: str) -> None:
    """run and scale are refused in one line with exit 2, listing what is allowed."""
    monkeypatch.setenv("SSH_ORIGINAL_COMMAND", command)
    code, out, err = run(capsys, "--config", str(config.path), "ssh-command")
    assert (code, out) == (2, "")
    assert err == (f"relman: error: ssh-command: {command!r} is not allowed; allowed: abort, "
                   "deploy, history, logs, ps, releases, rollback, session, status, switch\n")


def test_ssh_command_allows_ps(capsys: pytest.CaptureFixture[str],
                               monkeypatch: pytest.MonkeyPatch, config: Config) -> None:
    """ps is let through (to the daemon, absent here: exit 3) once it is a command; an
    allowed name that is no command yet is refused like any other, never a crash."""
    monkeypatch.setenv("SSH_ORIGINAL_COMMAND", "relman ps")
    code, _out, err = run(capsys, "--config", str(config.path), "ssh-command")
    assert code == (3 if "ps" in cli.commands else 2), err

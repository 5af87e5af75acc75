"""`relman run -- CMD [ARG...]`: a one-off command in the live release's environment.

The CLI process becomes the command (execve), rather than asking the daemon to start it:
the command gets the caller's terminal (an interactive `manage.py shell`), its signals
(Ctrl-C, a closed ssh session) and its exit status as they are, with no daemon involved
(a stopped app can still run its migrations). It runs as the invoking user, who must be
the app root's owner: a management command run as root would leave files the daemon's
user cannot touch.
"""

from __future__ import annotations

import os
import pwd
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NoReturn

from relman.config import Config, ServerConfig
from relman.errors import CommandNotExecutable, CommandNotFound, NothingLive, UsageError
from relman.releases import registry
from relman.releases.layout import AppRoot
from relman.transaction.release_env import login_env, release_cwd, release_env


def run_in_live_release(config: Config, argv: Sequence[str], environ: Mapping[str, str], *,
                        server: ServerConfig | None = None) -> NoReturn:
    """Replace this process with *argv* in the live release: its directory, its venv first
    on PATH, the env and env_file of *server* (default: the config's [server])."""
    if not argv:
        raise UsageError("run: no command given: relman run -- CMD [ARG...]")
    root = AppRoot(config.app.root)
    live = root.current_release()
    manifest = registry.load(root, live) if live else None
    if manifest is None or not manifest.venv:
        raise NothingLive("run: nothing is live: deploy a release first")
    _check_user(root)
    env = release_env(config, root, manifest, login_env(environ), process="run",
                      server=server)
    cwd = release_cwd(root, manifest)
    program = find_program(argv[0], env["PATH"], cwd)
    os.chdir(cwd)
    try:
        os.execve(program, list(argv), env)  # noqa: S606 - the argv the user typed, no shell
    except OSError as e:  # a directory, no permission, not a program (ENOEXEC)
        raise CommandNotExecutable(f"run: {argv[0]}: {e.strerror or e}") from None


def find_program(name: str, path: str, cwd: Path) -> str:
    """*name* as a shell finds it: a name with a slash relative to *cwd*, else the first
    executable file of that name on *path*."""
    if "/" in name:
        program = cwd / name
        if not program.exists():
            raise CommandNotFound(f"run: {name}: no such file in {cwd}")
        return str(program)
    found = shutil.which(name, path=path)
    if found is None:
        raise CommandNotFound(f"run: {name}: command not found in the release's venv or "
                              f"on PATH ({path})")
    return found


def _check_user(root: AppRoot) -> None:
    owner = root.state.stat().st_uid
    if os.geteuid() != owner:
        try:
            name = pwd.getpwuid(owner).pw_name
        except KeyError:
            name = str(owner)
        raise UsageError(f"run: run it as {name}, the owner of {root.state}: "
                         f"sudo -u {name} relman run -- ...")

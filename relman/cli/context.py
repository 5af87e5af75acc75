"""What every command shares: the Context (config found once, the daemon called, output
as text or JSON), the pass decorator and the --wait option."""

from __future__ import annotations

import getpass
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import click

from relman import client
from relman.config import Config, load_config
from relman.config_search import find_config, lenient_root
from relman.errors import ConfigError, RelmanError
from relman.releases.layout import AppRoot

if TYPE_CHECKING:
    from relman.results import Progress, Result

R = TypeVar("R", bound="Result")


class Context:
    def __init__(self, config_path: str | None, app: str | None, as_json: bool) -> None:
        self.config_path, self.app, self.json = config_path, app, as_json
        self._path: Path | None = None
        self._config: Config | None = None
        self._root_only: AppRoot | None = None
        self.who_as: str | None = None  # ssh-command --as NAME: who the jobs are by

    @property
    def path(self) -> Path:
        if self._path is None:
            self._path = find_config(self.config_path, os.environ, self.app, Path.cwd())
        return self._path

    @property
    def config(self) -> Config:
        if self._config is None:
            self._config = load_config(self.path)
        return self._config

    @property
    def root(self) -> AppRoot:
        return AppRoot(self.config.app.root)

    @property
    def root_only(self) -> AppRoot:
        """The app root, for commands that need nothing else from the config (the daemon's
        socket, the release store): found in an invalid config too, with a warning."""
        if self._root_only is None:
            path = self.path
            try:
                self._root_only = self.root
            except ConfigError as e:
                # The daemon keeps its last good config on a failed reload: the commands it
                # serves, and those that only read the root, must work in that emergency.
                found = lenient_root(path)
                if found is None:
                    raise
                click.echo(f"relman: warning: {e.message}: this file would not be loaded, a "
                           f"running daemon keeps its last good config (app root {found})",
                           err=True)
                self._root_only = AppRoot(found)
        return self._root_only

    def emit(self, data: object, human: Callable[[], str] | str) -> None:
        """*data* as JSON with --json, else *human*."""
        if self.json:
            click.echo(json.dumps(data, sort_keys=True, default=str))
        else:
            text = human() if callable(human) else human
            if text:
                click.echo(text)

    def call(self, command: str, into: type[R], **args: object) -> R:
        """One request to the daemon, printing its progress as it streams; its answer read
        *into* that result class."""
        def progress(event: Progress) -> None:
            if self.json:
                click.echo(json.dumps(event.to_json()), nl=True)
            else:
                click.echo(f"[{event.step}] {event.message}")
            sys.stdout.flush()

        try:
            return client.request(self.root_only.control_sock, command, args,
                                  client_info(self.who_as), progress, into=into)
        except RelmanError as e:
            raise self.named(e) from None

    def named(self, error: RelmanError) -> RelmanError:
        """*error* with its hints naming this app's unit: relman@shop for
        /etc/relman/shop.toml (the unit's instance is the config file's name)."""
        unit = f"relman@{self.path.stem}"
        error.message = error.message.replace("relman@APP", unit)
        if error.hint:
            error.hint = error.hint.replace("relman@APP", unit)
        return error


def client_info(who_as: str | None = None) -> dict[str, object]:
    """Who asks, for the daemon's history: the user, the SSH client's address, and the label
    of `ssh-command --as` (the daemon puts the login name of the socket's peer beside it)."""
    user = os.environ.get("SUDO_USER") or getpass.getuser()
    ssh = os.environ.get("SSH_CLIENT", "").split(" ")[0]
    info: dict[str, object] = {"user": user, "ssh": ssh, "pid": os.getpid()}
    if who_as is not None:
        info["as"] = who_as
    return info


pass_ctx = click.make_pass_decorator(Context)
WAIT = click.option("--wait", is_flag=True, help="Wait for a running job instead of exit 4.")

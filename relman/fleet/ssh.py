"""The ssh command line that runs one relman command on one fleet host."""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from relman.config_fleet import FleetConfig, parse_host

__all__ = ["ssh_argv"]


def ssh_argv(fleet: FleetConfig, host: str, relman_args: Sequence[str]) -> list[str]:
    """argv running `relman [--app APP] *relman_args*` on *host* (one of fleet.hosts).

    ssh joins the words after the destination with spaces into one string for the remote
    shell (or a forced command's SSH_ORIGINAL_COMMAND, which ssh-command splits with shlex),
    so the remote command is sent as one shell-quoted word. host:port becomes `-p PORT`;
    `--` ends ssh's options before the destination.
    """
    target = parse_host(host)
    port = ["-p", str(target.port)] if target.port is not None else []
    app = ["--app", fleet.app] if fleet.app else []
    return [*fleet.ssh, *port, "--", target.destination,
            shlex.join(["relman", *app, *relman_args])]

"""The ssh command line that runs one relman command on one fleet host."""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from relman.config_fleet import FleetConfig, parse_host

__all__ = ["CONTROL_PERSIST", "ssh_argv", "ssh_options"]


def ssh_argv(fleet: FleetConfig, host: str, relman_args: Sequence[str], *,
             control_path: Path | None = None) -> list[str]:
    """argv running `relman [--app APP] *relman_args*` on *host* (one of fleet.hosts).

    ssh joins the words after the destination with spaces into one string for the remote
    shell (or a forced command's SSH_ORIGINAL_COMMAND, which ssh-command splits with shlex),
    so the remote command is sent as one shell-quoted word. host:port becomes `-p PORT`;
    `--` ends ssh's options before the destination.
    """
    target = parse_host(host)
    app = ["--app", fleet.app] if fleet.app else []
    return [*fleet.ssh, *ssh_options(host, control_path), "--", target.destination,
            shlex.join(["relman", *app, *relman_args])]


def ssh_options(host: str, control_path: Path | None) -> list[str]:
    """-p PORT of *host*, and with *control_path* the options sharing one master connection
    per host (command-line -o options win over the user's ssh config)."""
    target = parse_host(host)
    port = ["-p", str(target.port)] if target.port is not None else []
    if control_path is None:
        return port
    return [*port, "-o", "ControlMaster=auto", "-o", f"ControlPath={control_path}",
            "-o", f"ControlPersist={CONTROL_PERSIST}"]


#: seconds a master connection outlives its last session: it closes itself after a killed
#: coordinator; a live one closes it with `ssh -O exit` at its end
CONTROL_PERSIST: Final = 60

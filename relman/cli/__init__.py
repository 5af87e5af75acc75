"""The relman command line: the one place errors become output and exit codes.

The commands are click's, in relman.cli.commands. `relman daemon` as systemd starts it
(`relman --app NAME daemon`) runs without them: click and the commands' modules would stay
in the daemon for its whole life (1.7 MiB of its idle RSS, issue 11). Any other command
line, `relman daemon --help` or a typo included, goes to click."""

from __future__ import annotations

import os
import sys

from relman.cli.daemon import plain_daemon_options, run_daemon_command
from relman.config_search import hoist_global_options

__all__ = ["main"]


def main(argv: list[str] | None = None) -> None:
    """Console entry point."""
    args = hoist_global_options(sys.argv[1:] if argv is None else argv)
    # click's shell completion answers through the environment, whatever the arguments.
    options = None if "_RELMAN_COMPLETE" in os.environ else plain_daemon_options(args)
    if options is not None:
        run_daemon_command(options)
        return
    from relman.cli.commands import main as run_command

    run_command(args)

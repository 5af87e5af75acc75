"""`relman daemon` without click: the daemon keeps only what supervision needs (issue 11).

The command is still click's too (relman.cli.commands: help, the docs, any command line
this module does not take); both end in start_daemon()."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from relman.cli.failures import error_funnel
from relman.config import load_config
from relman.config_search import find_config


@dataclass(frozen=True)
class DaemonOptions:
    config_path: str | None = None  # --config
    app: str | None = None  # --app
    as_json: bool = False  # --json


def plain_daemon_options(args: list[str]) -> DaemonOptions | None:
    """The options of *args* (global options hoisted before the command) when they are
    `daemon` and nothing else but --json, --config PATH and --app NAME, each at most once;
    None for anything else, which click parses (and reports, when it is wrong)."""
    if not args or args[-1] != "daemon":
        return None
    found: dict[str, str] = {}
    options = args[:-1]
    i = 0
    while i < len(options):
        name, equals, value = options[i].partition("=")
        if name in found:
            return None
        if name == "--json" and not equals:
            value = "yes"
        elif name in ("--config", "--app") and not equals and i + 1 < len(options):
            i += 1
            value = options[i]
        elif name not in ("--config", "--app") or not equals:
            return None
        if name != "--json" and (not value or value.startswith("-")):
            return None  # click's to take or refuse
        found[name] = value
        i += 1
    return DaemonOptions(found.get("--config"), found.get("--app"), "--json" in found)


def run_daemon_command(options: DaemonOptions) -> None:
    """`relman daemon` with *options*: errors become output as for every command."""
    with error_funnel(options.as_json):
        path = find_config(options.config_path, os.environ, options.app, Path.cwd())
        start_daemon(load_config(path).path, as_json=options.as_json)


def start_daemon(config_path: Path, *, as_json: bool) -> None:
    """Run the daemon for *config_path* in the foreground until SIGTERM."""
    # structlog imports rich when it is installed (import-linter brings it into a test venv)
    # for the tracebacks of its ConsoleRenderer, which relman never uses: 4 MiB of the
    # daemon's RSS for its whole life (issue 11). A None entry makes that import fail.
    if "rich" not in sys.modules:
        sys.modules["rich"] = None  # type: ignore[assignment]
    from relman import logs
    from relman.daemon import run_daemon

    logs.configure(json=as_json)
    run_daemon(config_path)

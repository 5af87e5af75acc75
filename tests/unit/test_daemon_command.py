"""`relman daemon` without click (relman.cli.daemon): which command lines it takes; click
parses (and reports) every other one."""

from __future__ import annotations

import pytest

from relman.cli.daemon import DaemonOptions, plain_daemon_options
from relman.config_search import hoist_global_options


@pytest.mark.parametrize(("argv", "expected"), [
    (["daemon"], DaemonOptions()),
    (["--app", "shop", "daemon"], DaemonOptions(app="shop")),  # systemd's ExecStart
    (["--config", "/etc/relman/shop.toml", "daemon"],
     DaemonOptions(config_path="/etc/relman/shop.toml")),
    (["daemon", "--json", "--config=a.toml"], DaemonOptions(config_path="a.toml", as_json=True)),
    (["--app=shop", "--config", "b.toml", "daemon"],
     DaemonOptions(config_path="b.toml", app="shop")),
])
def test_a_plain_daemon_command_line_runs_without_click(
        argv: list[str], expected: DaemonOptions) -> None:
    assert plain_daemon_options(hoist_global_options(argv)) == expected


@pytest.mark.parametrize("argv", [
    [], ["status"], ["daemon", "--help"], ["-h", "daemon"], ["--version", "daemon"],
    ["daemon", "extra"], ["deploy", "daemon"], ["--json", "--json", "daemon"],
    ["--app", "a", "--app", "b", "daemon"], ["--config", "daemon"], ["--config=", "daemon"],
    ["--config", "--json", "daemon"], ["--json=yes", "daemon"], ["--bogus", "daemon"],
    ["run", "daemon"], ["--", "daemon"],
])
def test_any_other_command_line_goes_to_click(argv: list[str]) -> None:
    """Help, version, extra arguments, repeated or empty options, unknown ones: click's to
    parse, run or refuse, as for every command."""
    assert plain_daemon_options(hoist_global_options(argv)) is None

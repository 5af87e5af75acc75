"""Which relman.toml a command means: --config, $RELMAN_CONFIG, --app, ./relman.toml, or the
only file in /etc/relman; and the app root an invalid one still names."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from relman.config import NAME_RE
from relman.errors import ConfigError


def _existing(path: Path, source: str) -> Path:
    if not path.exists():
        raise ConfigError(path, "", f"no such file (named by {source})")
    return path


def find_config(cli_path: str | None, env: Mapping[str, str], app_name: str | None, cwd: Path,
                etc_dir: Path = Path("/etc/relman")) -> Path:
    """The config file: --config, $RELMAN_CONFIG, --app's file, ./relman.toml, the only one."""
    if cli_path:
        return _existing(cwd / cli_path, "--config")
    if env.get("RELMAN_CONFIG"):
        return _existing(cwd / env["RELMAN_CONFIG"], "$RELMAN_CONFIG")
    if app_name is not None:
        if not NAME_RE.fullmatch(app_name):  # it becomes a path: no "/" or ".."
            raise ConfigError("--app", "", f"{app_name!r} must match {NAME_RE.pattern}")
        return _existing(etc_dir / f"{app_name}.toml", "--app")
    local = cwd / "relman.toml"
    if local.is_file():
        return local
    found = sorted(p for p in etc_dir.glob("*.toml") if p.is_file())
    if len(found) == 1:
        return found[0]
    tried = f"tried {local} and {etc_dir}/*.toml" + (
        f", which holds {len(found)}: {', '.join(p.name for p in found)}" if found else "")
    raise ConfigError("relman.toml", "", "no config found: pass --config PATH or --app NAME, "
                      f"or set RELMAN_CONFIG ({tried})")


# A table header, and a root line: a basic string without escapes, or a literal string.
_HEADER: Final = re.compile(r"\s*\[(.*)\]\s*(?:#.*)?")
_ROOT_LINE: Final = re.compile(
    r"""\s*(app\s*\.\s*)?root\s*=\s*(?:"([^"\\]*)"|'([^']*)')\s*(?:#.*)?""")


def _root_lines(text: str) -> set[str]:
    """Every `root = "..."` under [app] (or `app.root = "..."` before any table) in *text*,
    read line by line: the file is not even valid TOML."""
    found, table = set(), ""
    for line in text.splitlines():
        if header := _HEADER.fullmatch(line):
            table = header.group(1).strip()
        elif (m := _ROOT_LINE.fullmatch(line)) and (table, bool(m.group(1))) in (
                ("app", False), ("", True)):
            found.add(m.group(2) if m.group(2) is not None else m.group(3))
    return found


def lenient_root(path: Path) -> Path | None:
    """app.root of a config file that load_config() refuses, read as leniently as possible:
    from the parsed TOML whatever else is wrong in it, else from a `root = "..."` line under
    [app]. None unless that names one absolute path, an existing directory."""
    try:
        text = path.read_bytes().decode(errors="replace")
    except OSError:
        return None
    try:
        app = tomllib.loads(text).get("app")
        roots: list[object] = [app.get("root")] if isinstance(app, dict) else []
    except tomllib.TOMLDecodeError:
        roots = list(_root_lines(text))
    if len(roots) != 1 or not isinstance(roots[0], str) or not roots[0].startswith("/"):
        return None
    root = Path(roots[0])
    return root if root.is_dir() else None


GLOBAL_FLAGS: Final = frozenset({"--json"})
GLOBAL_VALUES: Final = frozenset({"--config", "--app"})
# Commands whose arguments from the first word on are another program's command line
# (`relman run python manage.py dumpdata --json`): nothing there is relman's.
PROGRAM_COMMANDS: Final = frozenset({"run"})


def hoist_global_options(args: list[str]) -> list[str]:
    """*args* with the global options (--json, --config PATH, --app NAME) moved before the
    command wherever they stand (DESIGN section 7: `relman history --json`); nothing after a
    `--` moves, since that is an argument (`relman deploy -- REF`), nor anything of the
    program `relman run` runs."""
    front: list[str] = []
    rest: list[str] = []
    command: str | None = None
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--" or (command in PROGRAM_COMMANDS and not arg.startswith("-")):
            rest.extend(args[i:])
            break
        name = arg.split("=", 1)[0]
        if arg in GLOBAL_FLAGS or (name in GLOBAL_VALUES and "=" in arg):
            front.append(arg)
        elif arg in GLOBAL_VALUES and i + 1 < len(args):
            front.extend(args[i:i + 2])
            i += 1
        else:
            if command is None and not arg.startswith("-"):
                command = arg
            rest.append(arg)
        i += 1
    return front + rest

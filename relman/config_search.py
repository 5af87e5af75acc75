"""Which relman.toml a command means: --config, $RELMAN_CONFIG, --app, ./relman.toml, or the
only file in /etc/relman."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

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

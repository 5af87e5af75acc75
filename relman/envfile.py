"""Read a KEY=VALUE env file (server.env_file); its values are never logged."""

from __future__ import annotations

import shlex
from pathlib import Path

from relman.errors import ConfigError


def read_env_file(path: Path) -> dict[str, str]:
    """Parse *path*: blank lines and # comments skipped, `export ` allowed, values unquoted."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(path, "server.env_file", "file not found") from None
    except OSError as e:
        raise ConfigError(path, "server.env_file", e.strerror or str(e)) from None
    env: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").strip()
        key, sep, value = line.partition("=")
        if not sep or not key.strip().isidentifier():
            # The line may hold a secret: name the line, never print it.
            raise ConfigError(path, f"line {number}", "expected KEY=VALUE")
        value = value.strip()
        if value[:1] in ("'", '"'):
            try:
                parts = shlex.split(value)
            except ValueError:
                raise ConfigError(path, f"line {number}", "unbalanced quotes") from None
            value = parts[0] if parts else ""
        env[key.strip()] = value
    return env

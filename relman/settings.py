"""The settings a release runs with: its effective [server], [health], [processes] and
[static] tables, stored in its manifest as plain JSON, env values only as keyed hashes
(DESIGN section 8).

[static] is recorded so that publication (relman.releases.static) takes each kept
release's files from the directories that release was built with, even after the config
changed. A manifest recorded before [static] existed has no such table: that release's
[static] is today's.

A rollback runs its target with the settings it ran with before, as Heroku's does (Kamal's
keeps today's config). The stored JSON is the config file's own spelling of each value, read
back through the same converters and checks (relman.config.parse_table), so a manifest this
version writes always reads back equal, env values aside: those are never stored, only
`hmac-sha256:<16 hex>` of them under the app root's key (state/settings.key), so a diff can
say that a value changed without the manifest, the history or `relman releases` holding it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Final

from relman.config import (
    STATIC,
    Config,
    HealthConfig,
    ProcessConfig,
    ServerConfig,
    check_server,
    parse_table,
)
from relman.config_values import FrozenMap, plain
from relman.errors import ConfigError

TABLES: Final = ("server", "health", "processes")
HASH_PREFIX: Final = "hmac-sha256:"
_SOURCE: Final = Path("settings")  # what a ConfigError names before it becomes a ValueError
_UNSET: Final = object()


@dataclass(frozen=True, slots=True)
class Settings:
    """What a release runs with; the rest of the config (build, swap...) is today's."""
    server: ServerConfig
    health: HealthConfig
    processes: Mapping[str, ProcessConfig]
    static: Mapping[str, str] = FrozenMap()


def settings_of(config: Config) -> Settings:
    """The settings *config* gives a release."""
    return Settings(config.server, config.health, config.processes, config.static)


def env_hash(value: str, key: bytes) -> str:
    """`hmac-sha256:<first 16 hex>` of an env value: equal values hash equal under one key,
    and a short secret cannot be found by hashing guesses without the key."""
    return HASH_PREFIX + hmac.new(key, value.encode(), hashlib.sha256).hexdigest()[:16]


def _table(obj: Any, *, skip: str = "") -> dict[str, Any]:
    return {f.name: plain(getattr(obj, f.name), f.metadata["type"])
            for f in fields(obj) if f.name != skip}


def settings_to_json(settings: Settings, key: bytes) -> dict[str, Any]:
    """*settings* as plain JSON, each value as relman.toml spells it; server.env values as
    env_hash() under *key*."""
    server = _table(settings.server, skip="env")
    server["env"] = {name: env_hash(value, key) for name, value in settings.server.env.items()}
    return {"server": server, "health": _table(settings.health),
            "processes": {name: _table(p) for name, p in settings.processes.items()},
            STATIC: dict(settings.static)}


def settings_from_json(data: Mapping[str, Any], config: Config) -> Settings:
    """Settings stored by settings_to_json(), parsed and checked as the config file is; env
    values are *config*'s (only hashes were stored). ValueError when they cannot be read."""
    if not isinstance(data, Mapping):
        raise ValueError("settings are not a JSON object")  # noqa: TRY004 - one error for all
    missing = [table for table in TABLES if table not in data]
    unknown = sorted(set(data) - {*TABLES, STATIC})
    if missing or unknown:
        raise ValueError(f"{(missing or unknown)[0]}: {'missing' if missing else 'unknown'} "
                         "table")
    try:
        raw_server = data["server"]
        if isinstance(raw_server, dict):
            raw_server = {**raw_server, "env": {}}
        server = replace(parse_table(_SOURCE, "server", raw_server), env=config.server.env)
        check_server(_SOURCE, server)
        static = parse_table(_SOURCE, STATIC, data[STATIC]) if STATIC in data \
            else config.static
        return Settings(server, parse_table(_SOURCE, "health", data["health"]),
                        parse_table(_SOURCE, "processes", data["processes"]), static)
    except ConfigError as e:
        raise ValueError(f"{e.key}: {e.reason}") from None


def _flat(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested tables as dotted keys: {"server": {"env": {"A": h}}} -> {"server.env.A": h}."""
    flat: dict[str, Any] = {}
    for name, value in data.items():
        if isinstance(value, Mapping):
            flat |= _flat(value, f"{prefix}{name}.")
        else:
            flat[f"{prefix}{name}"] = value
    return flat


def _processes(data: Mapping[str, Any]) -> Mapping[str, Any]:
    found = data.get("processes")
    return found if isinstance(found, Mapping) else {}


def _show(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # stop_timeout 70 -> 40, as the file says it
    return "(unset)" if value is _UNSET else json.dumps(value, ensure_ascii=False)


def settings_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """What changed from *old* to *new* (settings_to_json() data), as sorted lines:
    "server.workers 2 -> 4", "processes.beat added", "server.env.API_KEY changed" (an env
    value is never shown, not even its hash)."""
    lines = []
    old_procs, new_procs = _processes(old), _processes(new)
    flat_old = _flat({k: v for k, v in old.items() if k != "processes"})
    flat_new = _flat({k: v for k, v in new.items() if k != "processes"})
    for name in old_procs.keys() | new_procs.keys():
        if name not in old_procs or name not in new_procs:
            lines.append(f"processes.{name} {'added' if name in new_procs else 'removed'}")
        else:
            for flat, procs in ((flat_old, old_procs), (flat_new, new_procs)):
                table = procs[name]
                flat |= _flat(table if isinstance(table, Mapping) else {}, f"processes.{name}.")
    for key in flat_old.keys() | flat_new.keys():
        before, after = flat_old.get(key, _UNSET), flat_new.get(key, _UNSET)
        if before == after:
            continue
        if key.startswith("server.env."):
            lines.append(f"{key} " + ("added" if before is _UNSET else
                                      "removed" if after is _UNSET else "changed"))
        else:
            lines.append(f"{key} {_show(before)} -> {_show(after)}")
    return sorted(lines)

"""The config `relman fleet` reads: `[app] name` and `[fleet]`, the other tables living on
the hosts; or a host's whole config that also has a [fleet] table, validated as any."""

from __future__ import annotations

from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Final

from relman.config import NAME_RE, AppConfig, load_config, read_toml
from relman.config_fleet import FLEET, FleetConfig, parse_fleet
from relman.config_values import CONVERTERS, BadValue, did_you_mean, kind_of
from relman.errors import ConfigError

__all__ = ["FleetFile", "load_fleet_config"]

_APP: Final = "app"


@dataclass(frozen=True, slots=True)
class FleetFile:
    """A validated config as `relman fleet` needs it."""
    path: Path
    app_name: str
    fleet: FleetConfig


def _app_name(path: Path, raw: object) -> str:
    """[app] of a fleet-only config: name required, the other keys (unused) typed if given."""
    if not isinstance(raw, dict):
        raise ConfigError(path, _APP, f"expected a table, got {kind_of(raw)}")
    keys = {key.name: key for key in fields(AppConfig)}
    for name, value in raw.items():
        if name not in keys:
            raise ConfigError(path, f"{_APP}.{name}", "unknown key" + did_you_mean(name, keys))
        try:
            CONVERTERS[keys[name].metadata["type"]](value)
        except BadValue as e:
            raise ConfigError(path, f"{_APP}.{name}", str(e)) from None
    name = raw.get("name")
    if not isinstance(name, str):
        raise ConfigError(path, f"{_APP}.name", "required")
    if not NAME_RE.fullmatch(name):
        raise ConfigError(path, f"{_APP}.name", f"must match {NAME_RE.pattern}")
    return name


def load_fleet_config(path: Path) -> FleetFile:
    """*path* for `relman fleet`: a ConfigError naming file, key and reason if it is not one.

    With only [app] and [fleet] tables it is a fleet-only config (repo and root may be
    absent); with any other table it is a host's config too, validated as load_config does.
    """
    data = read_toml(path)
    if FLEET not in data:
        raise ConfigError(path, FLEET, "required: `relman fleet` needs a [fleet] table")
    if set(data) - {_APP, FLEET} or _has_host_keys(data.get(_APP)):
        config = load_config(path)
        assert config.fleet is not None
        return FleetFile(path, config.app.name, config.fleet)
    return FleetFile(path, _app_name(path, data.get(_APP, {})), parse_fleet(path, data[FLEET]))


def _has_host_keys(app: object) -> bool:
    """[app] names more than a fleet needs (repo, root): the file is a host's config."""
    required = {k.name for k in fields(AppConfig) if k.default is MISSING} - {"name"}
    return isinstance(app, dict) and bool(required & set(app))

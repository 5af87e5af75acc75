"""The [fleet] table (DESIGN section 9): which hosts `relman fleet` drives over ssh, and how.

A table of its own, below relman.config, so that a host's config may carry it (load_config)
and a config used only for `relman fleet` needs nothing else but `[app] name`
(relman.fleet.config.load_fleet_config).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from relman.config_values import BadValue, load_table, one_of
from relman.config_values import key as _key
from relman.errors import ConfigError

__all__ = ["FLEET", "FleetConfig", "Host", "parse_fleet", "parse_host"]

FLEET: Final = "fleet"


@dataclass(frozen=True, slots=True, kw_only=True)
class FleetConfig:
    hosts: tuple[str, ...] = field(metadata={
        "type": "array of strings", "doc": "required; ssh destinations, user@host[:port] or alias"})
    # BatchMode: fail, never ask; ConnectTimeout and ServerAlive*: a host that stops
    # answering is lost in about a minute, not waited for until TCP gives up.
    ssh: tuple[str, ...] = _key(("ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10",
                                 "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4"),
                                "command",
                                "the ssh argv that each host's command follows")
    app: str = _key("", "string", 'sent as `relman --app APP ...`; "" sends none')
    strategy: str = _key("together", "string", "together | rolling")
    batch: int = _key(1, "integer", "rolling: hosts switched at a time, at least 1")
    canary: int = _key(0, "integer", "hosts switched first and watched, below len(hosts)")
    canary_seconds: float = _key(30.0, "number", "seconds the canary hosts are watched")
    parallel: int = _key(8, "integer", "commands running at once across the hosts, at least 1")
    release_host: str = _key("", "string", 'runs release.commands; "" is the first host')
    multiplex: bool = _key(True, "boolean",
                           "one OpenSSH connection per host for a whole run (ControlMaster)")


@dataclass(frozen=True, slots=True)
class Host:
    """One [fleet] hosts entry: what ssh is given (destination, and -p PORT if any)."""
    destination: str  # user@host, host, or an alias from ~/.ssh/config
    port: int | None


# [user@]host[:port]; host a name or alias (never starting with "-": ssh would take it for
# an option), or an IPv6 address in brackets. ssh itself has no :port (that is `-p`).
_HOST_RE: Final = re.compile(
    r"(?:(?P<user>[A-Za-z0-9_.][A-Za-z0-9_.-]*)@)?"
    r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.][A-Za-z0-9_.-]*)"
    r"(?::(?P<port>[0-9]+))?")


def parse_host(text: str) -> Host:
    """*text* as a Host; BadValue saying why it is not `user@host[:port]` or an alias."""
    m = _HOST_RE.fullmatch(text)
    if not m:
        raise BadValue(f"{text!r} is not user@host[:port] or an ssh config alias")
    port = int(m["port"]) if m["port"] is not None else None
    if port is not None and not 1 <= port <= 65535:
        raise BadValue(f"{text!r}: port must be between 1 and 65535")
    host = m["host"].strip("[]")
    return Host(f"{m['user']}@{host}" if m["user"] else host, port)


def _hosts(hosts: tuple[str, ...]) -> str | None:
    if not hosts:
        return "must list at least one host"
    seen: set[Host] = set()
    for text in hosts:
        try:
            host = parse_host(text)
        except BadValue as e:
            return str(e)
        if host in seen:
            return f"{text!r} is listed twice"
        seen.add(host)
    return None


_CHECKS: Final[dict[str, Any]] = {
    "hosts": _hosts,
    "ssh": lambda v: None if v else "must not be empty (an ssh command such as [\"ssh\"])",
    "app": lambda v: "must not start with -" if v.startswith("-") else None,
    "strategy": one_of("together", "rolling"),
    "batch": lambda v: None if v >= 1 else "must be at least 1",
    "canary_seconds": lambda v: None if v >= 0 else "must be at least 0",
    "parallel": lambda v: None if v >= 1 else "must be at least 1",
}


def parse_fleet(path: Path, raw: object) -> FleetConfig:
    """The [fleet] table *raw* of *path*, converted and checked; a ConfigError naming the
    key and the reason otherwise."""
    fleet: FleetConfig = load_table(path, FLEET, FleetConfig, raw, _CHECKS)
    for key, reason in _across(fleet):
        if reason:
            raise ConfigError(path, f"{FLEET}.{key}", reason)
    return fleet


def _across(fleet: FleetConfig) -> Iterator[tuple[str, str | None]]:
    """The rules between keys: (key to blame, reason or None)."""
    last = len(fleet.hosts) - 1
    yield "canary", None if 0 <= fleet.canary <= last else (
        f"must be between 0 and {last} (one less than the {last + 1} hosts)")
    hosts = {parse_host(h) for h in fleet.hosts}
    try:
        listed = not fleet.release_host or parse_host(fleet.release_host) in hosts
    except BadValue:
        listed = False
    yield "release_host", None if listed else f"{fleet.release_host!r} is not one of fleet.hosts"

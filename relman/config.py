"""relman.toml -> frozen dataclasses, validated once at the edge (DESIGN sections 3 and 8).

Each key is a dataclass field whose metadata (TOML type name, doc line) is the one source for
parsing, schema() (the man page) and example_config(), as gunicorn's `Setting` classes are.
What each type name accepts, and the checks keys share, live in relman.config_values.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from signal import Signals
from typing import Any, Final, get_type_hints

from relman.config_fleet import FLEET, FleetConfig, parse_fleet
from relman.config_values import (
    Check,
    FrozenEnv,
    FrozenMap,
    at_least,
    check_mode,
    did_you_mean,
    kind_of,
    load_table,
    one_of,
    placeholders,
    relative,
    toml_text,
    url,
)
from relman.config_values import key as _key
from relman.errors import ConfigError
from relman.static_urls import collision, directory_problem, prefix_problem

__all__ = [
    "NAME_RE", "PROCESS_NAME_RE", "STATIC", "STOP_SIGNALS", "TABLES", "AppConfig", "BuildConfig",
    "Config", "FrozenEnv", "HealthConfig", "ProcessConfig", "ReleaseConfig", "RestartConfig",
    "ServerConfig", "SwapConfig", "check_server", "example_config", "load_config",
    "parse_table", "read_toml", "schema",
]

NAME_RE: Final = re.compile(r"[a-z0-9][a-z0-9_-]*")
# No dots: a process unit's instance name is <release>.<name>.<index>.<gen>.
PROCESS_NAME_RE: Final = re.compile(r"[a-z][a-z0-9_-]*")
STOP_SIGNALS: Final = ("TERM", "INT", "QUIT", "HUP", "USR1", "USR2")


@dataclass(frozen=True, slots=True, kw_only=True)
class AppConfig:
    name: str = field(metadata={"type": "string", "doc": "required; [a-z0-9][a-z0-9_-]*"})
    repo: str = field(metadata={"type": "string", "doc": "required; a URL or path git can clone"})
    root: Path = field(metadata={"type": "path", "doc": "required; the app root, absolute"})
    keep_releases: int = _key(5, "integer", "finished releases that prune keeps, at least 1")


@dataclass(frozen=True, slots=True, kw_only=True)
class BuildConfig:
    python: str = _key("python3", "string", "interpreter for the release's virtualenv")
    requirements: tuple[str, ...] = _key(("requirements.txt",), "string or array of strings",
                                         "dependency inputs, relative; hashed for the venv cache")
    commands: tuple[tuple[str, ...], ...] = _key((), "array of commands",
                                                 "run in the release dir, venv active")
    shared: tuple[str, ...] = _key((), "array of strings", "paths linked from <root>/shared")
    installer: str = _key("auto", "string", "auto | uv | pip: what builds the virtualenv")
    link_unchanged: bool = _key(True, "boolean",
                                "hard-link files unchanged since the live release")


@dataclass(frozen=True, slots=True, kw_only=True)
class ReleaseConfig:
    commands: tuple[tuple[str, ...], ...] = _key((), "array of commands",
                                                 "once per deploy, before the switch (migrations)")


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerConfig:
    kind: str = _key("gunicorn", "string", "gunicorn | uwsgi | command | none")
    app: str = _key("", "string", "WSGI target module:callable (uwsgi: or wsgi_file)")
    wsgi_file: str = _key("", "string", "uwsgi --wsgi-file, relative to the release")
    protocol: str = _key("http", "string", 'http | uwsgi ("uwsgi" needs kind = "uwsgi")')
    workers: int = _key(2, "integer", "worker processes, 1 to 512")
    args: tuple[str, ...] = _key((), "array of strings", "extra arguments to the server")
    command: tuple[str, ...] = _key((), "command", "kind=command argv; {socket} {release} {root}")
    env: Mapping[str, str] = _key(FrozenEnv(), "table of strings", "extra environment variables")
    env_file: str = _key("", "string", "dotenv file relative to <root>/shared; never logged")
    socket_mode: int = _key(0o660, "octal string", "mode of the app's socket; never 0777")
    socket_group: str = _key("", "string", 'group of the socket, e.g. "www-data" for nginx')


@dataclass(frozen=True, slots=True, kw_only=True)
class HealthConfig:
    path: str = _key("/", "string", "path that health checks GET")
    expect: tuple[int, int] = _key((200, 399), "array of two integers",
                                   "inclusive status range that counts as healthy")
    timeout: float = _key(30.0, "number", "seconds for a new release to become healthy")
    nginx_url: str = _key("", "string", 'check through nginx, e.g. "http://127.0.0.1/"')
    nginx_host: str = _key("", "string", "Host header for the checks through nginx")


@dataclass(frozen=True, slots=True, kw_only=True)
class SwapConfig:
    drain_timeout: float = _key(30.0, "number", "seconds to wait for an empty accept queue")
    stop_timeout: float = _key(30.0, "number", "graceful stop, then SIGKILL of the group")
    keep_warm: float = _key(0.0, "number", "seconds the previous release keeps running")
    verify_window: float = _key(300.0, "number", "seconds after a switch it may roll back")
    live_check_interval: float = _key(5.0, "number", "seconds between live checks in it")
    prepare_timeout: float = _key(600.0, "number",
                                  "seconds a prepared candidate waits for its switch")


@dataclass(frozen=True, slots=True, kw_only=True)
class RestartConfig:
    policy: str = _key("on-failure", "string", "always | on-failure | never")
    backoff_max: float = _key(30.0, "number", "seconds; crash loops back off exponentially")


@dataclass(frozen=True, slots=True, kw_only=True)
class ProcessConfig:
    """One [processes.NAME] table: a process type run beside the web server (DESIGN 8)."""
    command: tuple[str, ...] = field(metadata={
        "type": "command", "doc": "required; run in the release dir; {release} {root}"})
    count: int = _key(1, "integer", "instances, at least 0; `relman scale` overrides it")
    stop_signal: str = _key("TERM", "string", "TERM | INT | QUIT | HUP | USR1 | USR2")
    stop_timeout: float = _key(30.0, "number", "graceful stop, then SIGKILL of its processes")
    handover: str = _key("stop-first", "string", "stop-first | overlap")
    start_seconds: float = _key(1.0, "number", "seconds it must stay up to count as started")

    @property
    def signal(self) -> Signals:
        """stop_signal as a signal number."""
        return Signals["SIG" + self.stop_signal]


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    """One app's validated relman.toml; `path` is the file it was loaded from."""
    path: Path
    app: AppConfig
    build: BuildConfig
    release: ReleaseConfig
    server: ServerConfig
    health: HealthConfig
    swap: SwapConfig
    restart: RestartConfig
    # [processes.NAME] tables in file order; a read-only mapping.
    processes: Mapping[str, ProcessConfig] = FrozenMap()
    # [static]: URL prefix -> directory of the release tree (relman.static_urls).
    static: Mapping[str, str] = FrozenMap()
    # [fleet]: the hosts `relman fleet` drives (DESIGN 9), if this file names them.
    fleet: FleetConfig | None = None


# Table name -> dataclass in file order, read from Config itself so the two cannot drift.
# [processes] is a table of tables, of ProcessConfig: parse_table() knows it apart.
PROCESSES: Final = "processes"
# [static] is a table of prefix = directory strings, keyed by the user: it has no schema rows.
STATIC: Final = "static"
TABLES: Final[dict[str, type[Any]]] = {
    name: cls for name, cls in get_type_hints(Config).items()
    if name not in ("path", PROCESSES, STATIC, FLEET)}
_ALL_TABLES: Final = (*TABLES, PROCESSES, STATIC)


def _signal_name(name: str) -> str | None:
    if name in STOP_SIGNALS:
        return None
    if name.removeprefix("SIG") in STOP_SIGNALS:
        return f"write {name.removeprefix('SIG')!r}, without SIG"
    return f"must be one of {' | '.join(STOP_SIGNALS)}, not {name!r}"


_POSITIVE: Final = at_least(0, above=True)
_AT_LEAST_0: Final = at_least(0)
_PROCESS_PLACEHOLDERS: Final = placeholders("release", "root")
_CHECKS: Final[dict[str, Check]] = {
    "app.name": lambda v: None if NAME_RE.fullmatch(v) else f"must match {NAME_RE.pattern}",
    "app.repo": lambda v: None if v else "must not be empty",
    "app.root": lambda v: None if v.is_absolute() else "must be an absolute path",
    "app.keep_releases": lambda v: None if v >= 1 else "must be at least 1",
    "build.python": lambda v: None if v else "must not be empty",
    "build.requirements": lambda v: next(filter(None, map(relative, v)), None),
    "build.shared": lambda v: next(filter(None, map(relative, v)), None),
    "build.installer": one_of("auto", "uv", "pip"),
    "server.kind": one_of("gunicorn", "uwsgi", "command", "none"),
    "server.app": lambda v: "must not start with -" if v.startswith("-") else None,
    "server.wsgi_file": lambda v: relative(v) if v else None,
    "server.protocol": one_of("http", "uwsgi"),
    "server.workers": lambda v: None if 1 <= v <= 512 else "must be between 1 and 512",
    "server.command": placeholders("socket", "release", "root"),
    "server.env_file": lambda v: relative(v) if v else None,
    "server.socket_mode": check_mode,
    "health.path": lambda v: None if v.startswith("/") else "must start with /",
    "health.expect": lambda v: None if len(v) == 2 and 100 <= v[0] <= v[1] <= 599
    else "must be [low, high] with 100 <= low <= high <= 599",
    "health.timeout": _POSITIVE,
    "health.nginx_url": lambda v: url(v) if v else None,
    "swap.drain_timeout": _POSITIVE,
    "swap.stop_timeout": _POSITIVE,
    "swap.keep_warm": _AT_LEAST_0,
    "swap.verify_window": _AT_LEAST_0,
    "swap.live_check_interval": _POSITIVE,
    "swap.prepare_timeout": _POSITIVE,
    "restart.policy": one_of("always", "on-failure", "never"),
    "restart.backoff_max": _POSITIVE,
    # Checked as processes.NAME.KEY, named in errors as processes.worker.KEY.
    "processes.NAME.command": lambda v: _PROCESS_PLACEHOLDERS(v) if v else "empty command",
    "processes.NAME.count": lambda v: None if v >= 0 else "must be at least 0",
    "processes.NAME.stop_signal": _signal_name,
    "processes.NAME.stop_timeout": _POSITIVE,
    "processes.NAME.handover": one_of("stop-first", "overlap"),
    "processes.NAME.start_seconds": _AT_LEAST_0,
}

# Rules across [server] keys: (is broken, key to blame, reason). A key that the chosen kind
# ignores is an error too, so a config never says something relman silently does not do.
_SERVER_RULES: Final[tuple[tuple[Callable[[ServerConfig], bool], str, str], ...]] = (
    (lambda s: s.kind == "gunicorn" and not s.app, "server.app",
     'required for kind = "gunicorn" (module:callable)'),
    (lambda s: s.kind == "uwsgi" and bool(s.app) == bool(s.wsgi_file), "server.app",
     'kind = "uwsgi" needs exactly one of server.app and server.wsgi_file'),
    (lambda s: s.kind == "command" and not any("{socket}" in a for a in s.command),
     "server.command", 'kind = "command" needs an argv with {socket}, where it listens'),
    (lambda s: s.kind != "uwsgi" and bool(s.wsgi_file), "server.wsgi_file",
     'only used with kind = "uwsgi"'),
    (lambda s: s.kind != "command" and bool(s.command), "server.command",
     'only used with kind = "command"'),
    (lambda s: s.kind != "uwsgi" and s.protocol == "uwsgi", "server.protocol",
     '"uwsgi" needs kind = "uwsgi"'),
)
# With kind = "none" there is no web server: only these [server] keys mean anything (the
# environment is every process's). Any other key away from its default is an error.
_USED_WITHOUT_SERVER: Final = frozenset({"kind", "env", "env_file"})


def _load_table(path: Path, table: str, cls: type[Any], raw: object,
                checks: str | None = None) -> Any:
    """*raw* as a *cls* (config_values.load_table); its checks are those of _CHECKS under
    *checks* (default *table*): "processes.worker" is checked as "processes.NAME"."""
    prefix = f"{checks or table}."
    return load_table(path, table, cls, raw, {dotted.removeprefix(prefix): check
                                              for dotted, check in _CHECKS.items()
                                              if dotted.startswith(prefix)})


def _load_processes(path: Path, raw: object) -> Mapping[str, ProcessConfig]:
    if not isinstance(raw, dict):
        raise ConfigError(path, PROCESSES, f"expected a table of [processes.NAME] tables, "
                          f"got {kind_of(raw)}")
    processes = {}
    for name, table in raw.items():
        dotted = f"{PROCESSES}.{name}"
        if name == "web":
            raise ConfigError(path, dotted, '"web" is the [server]; name the process otherwise')
        if not PROCESS_NAME_RE.fullmatch(name):
            raise ConfigError(path, dotted, f"a process name must match {PROCESS_NAME_RE.pattern}")
        processes[name] = _load_table(path, dotted, ProcessConfig, table, f"{PROCESSES}.NAME")
    return FrozenMap(processes)


def _load_static(path: Path, raw: object) -> Mapping[str, str]:
    if not isinstance(raw, dict):
        raise ConfigError(path, STATIC, f'expected a table of "/prefix/" = "directory" '
                          f"strings, got {kind_of(raw)}")
    for prefix, directory in raw.items():
        dotted = f"{STATIC}.{toml_text(prefix)}"
        if not isinstance(directory, str):
            raise ConfigError(path, dotted, f"expected a string, got {kind_of(directory)}")
        clash = collision(raw, prefix)
        reason = prefix_problem(prefix) or directory_problem(directory) or (
            f"publishes to the same directory as {toml_text(clash)}" if clash else None)
        if reason:
            raise ConfigError(path, dotted, reason)
    return FrozenMap(raw)


def parse_table(path: Path, table: str, raw: object) -> Any:
    """The table *table* of a config read as plain data (tomllib's, or a manifest's JSON),
    converted and checked key by key; a ConfigError naming *path* and the key otherwise."""
    if table == PROCESSES:
        return _load_processes(path, raw)
    if table == STATIC:
        return _load_static(path, raw)
    return _load_table(path, table, TABLES[table], raw)


def check_server(path: Path, server: ServerConfig) -> None:
    """The rules across [server] keys; a ConfigError naming the key to blame."""
    for broken, key, reason in _SERVER_RULES:
        if broken(server):
            raise ConfigError(path, key, reason)
    if server.kind == "none":
        for unused in fields(ServerConfig):
            if unused.name not in _USED_WITHOUT_SERVER and \
                    getattr(server, unused.name) != unused.default:
                raise ConfigError(path, f"server.{unused.name}",
                                  'not used with kind = "none" (no web server)')


def read_toml(path: Path) -> dict[str, Any]:
    """*path* as TOML data; a ConfigError naming the file otherwise."""
    try:
        data = tomllib.loads(path.read_bytes().decode())
    except FileNotFoundError:
        raise ConfigError(path, "", "no such file") from None
    except OSError as e:
        raise ConfigError(path, "", f"cannot read: {e.strerror or e}") from None
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:  # with line and column
        raise ConfigError(path, "", f"invalid TOML: {e}") from None
    return data


def load_config(path: Path) -> Config:
    """Read and validate *path*; every problem is a ConfigError naming file, key and reason."""
    data = read_toml(path)
    for table in data:
        if table not in (*_ALL_TABLES, FLEET):
            raise ConfigError(path, table, "unknown table"
                              + did_you_mean(table, (*_ALL_TABLES, FLEET)))
    config = Config(path=path, **{name: parse_table(path, name, data.get(name, {}))
                                  for name in _ALL_TABLES},
                    fleet=parse_fleet(path, data[FLEET]) if FLEET in data else None)
    check_server(path, config.server)
    return config


def _rows(table: str, cls: type[Any]) -> list[tuple[str, str, str, str]]:
    return [(f"{table}.{key.name}", key.metadata["type"],
             "" if key.default is MISSING else toml_text(key.default, key.metadata["type"]),
             key.metadata["doc"]) for key in fields(cls)]


def schema() -> list[tuple[str, str, str, str]]:
    """(dotted key, type name, default as TOML text or "" if required, doc) for every key;
    the keys of a [processes.NAME] table as processes.NAME.KEY."""
    tables: list[tuple[str, type[Any]]] = [*TABLES.items(), (f"{PROCESSES}.NAME", ProcessConfig),
                                           (FLEET, FleetConfig)]
    return [row for table, cls in tables for row in _rows(table, cls)]


# The commented-out [processes.worker] of example_config(): uncommented, it loads.
EXAMPLE_PROCESS: Final = {"command": ["celery", "-A", "app", "worker"], "count": 2}


def example_config(*, name: str, repo: str, root: Path, app: str = "wsgi:application") -> str:
    """A commented relman.toml with every key at its default, and a [processes.worker] table
    commented out; load_config() accepts it, and accepts it with that table uncommented."""
    given = {"app.name": name, "app.repo": repo, "app.root": root, "server.app": app}
    lines = ["# relman.toml: see relman.toml(5). Every key is shown at its default."]
    for dotted, type_name, default, doc in schema():
        section, _, key = dotted.rpartition(".")
        if section == FLEET:  # only for `relman fleet`: relman.toml(5) shows it
            continue
        if section == f"{PROCESSES}.NAME":
            if "# [processes.worker]" not in lines:
                lines += ["", "# Processes beside the web server ([processes.NAME], NAME "
                          f"matching {PROCESS_NAME_RE.pattern}), such as:", "# [processes.worker]"]
            value = toml_text(EXAMPLE_PROCESS[key]) if key in EXAMPLE_PROCESS else default
            lines.append(f"# {key} = {value}".ljust(37) + f" # {doc}")
            continue
        if f"[{section}]" not in lines:
            lines += ["", f"[{section}]"]
        value = toml_text(given[dotted], type_name) if dotted in given else default
        lines.append(f"{key} = {value}".ljust(37) + f" # {doc}")
    return "\n".join(lines) + "\n"

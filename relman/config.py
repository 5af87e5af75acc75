"""relman.toml -> frozen dataclasses, validated once at the edge (DESIGN section 3).

Each key is a dataclass field whose metadata (TOML type name, doc line) is the one source for
parsing, schema() (the man page) and example_config(), as gunicorn's `Setting` classes are.
"""

from __future__ import annotations

import difflib
import json
import math
import re
import shlex
import tomllib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path, PurePath, PurePosixPath
from string import Formatter
from typing import Any, Final, final, get_type_hints
from urllib.parse import urlsplit

from relman.errors import ConfigError

NAME_RE: Final = re.compile(r"[a-z0-9][a-z0-9_-]*")


def _key(default: object, type_name: str, doc: str) -> Any:
    """A config key with a default: a dataclass field carrying its type name and doc line."""
    return field(default=default, metadata={"type": type_name, "doc": doc})


@final
class FrozenEnv(Mapping[str, str]):
    """A read-only, hashable str -> str mapping (server.env) that copies and pickles."""
    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, str] | None = None) -> None:
        self._items: dict[str, str] = dict(items or {})

    def __getitem__(self, key: str) -> str:
        return self._items[key]
    def __iter__(self) -> Iterator[str]:
        return iter(self._items)
    def __len__(self) -> int:
        return len(self._items)
    def __repr__(self) -> str:  # names only: values may be secrets
        return f"FrozenEnv({sorted(self._items)!r})"
    def __hash__(self) -> int:
        return hash(frozenset(self._items.items()))


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


@dataclass(frozen=True, slots=True, kw_only=True)
class ReleaseConfig:
    commands: tuple[tuple[str, ...], ...] = _key((), "array of commands",
                                                 "once per deploy, before the switch (migrations)")


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerConfig:
    kind: str = _key("gunicorn", "string", "gunicorn | uwsgi | command")
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


@dataclass(frozen=True, slots=True, kw_only=True)
class RestartConfig:
    policy: str = _key("on-failure", "string", "always | on-failure | never")
    backoff_max: float = _key(30.0, "number", "seconds; crash loops back off exponentially")


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


# Table name -> dataclass in file order, read from Config itself so the two cannot drift.
TABLES: Final[dict[str, type[Any]]] = {
    name: cls for name, cls in get_type_hints(Config).items() if name != "path"}


class _BadValueError(Exception):
    """Why a value is wrong; load_config() adds the file and the key."""


def _kind(value: object) -> str:
    kinds = ((bool, "a boolean"), (int, "an integer"), (float, "a float"), (str, "a string"),
             (list, "an array"), (dict, "a table"))
    return next((name for cls, name in kinds if isinstance(value, cls)), "a date or time")


def _typed(what: str, types: tuple[type, ...], make: Callable[[Any], Any] = str) -> Any:
    """A converter: accepts instances of *types* and builds the field value with *make*."""
    def convert(value: object) -> Any:
        if isinstance(value, bool) or not isinstance(value, types):  # TOML's true is not 1
            raise _BadValueError(f"expected {what}, got {_kind(value)}")
        return make(value)
    return convert


def _each(convert: Callable[[object], Any]) -> Callable[[list[Any]], tuple[Any, ...]]:
    """A converter for arrays: applies *convert* to every item, naming the item on error."""
    def each(items: list[Any]) -> tuple[Any, ...]:
        converted = []
        for i, item in enumerate(items, 1):
            try:
                converted.append(convert(item))
            except _BadValueError as e:
                raise _BadValueError(f"item {i}: {e}") from None
        return tuple(converted)
    return each


_STRINGS: Final = _each(_typed("a string", (str,)))


def _argv(value: str | list[Any], *, empty_ok: bool = False) -> tuple[str, ...]:
    """A command: a string split as a POSIX shell would (no expansion), or an argv array."""
    try:
        argv = _STRINGS(value) if isinstance(value, list) else tuple(shlex.split(value))
    except ValueError as e:  # from shlex: an unclosed quote or a trailing backslash
        raise _BadValueError(f"cannot split {value!r}: {e}") from None
    if not argv and not empty_ok:
        raise _BadValueError("empty command")
    return argv


def _env(table: dict[str, Any]) -> FrozenEnv:
    for name, text in table.items():
        if not isinstance(text, str):
            raise _BadValueError(f"{name}: expected a string, got {_kind(text)}")
        if not name or "=" in name or "\0" in name + text:  # execve() refuses these
            raise _BadValueError(f"{name!r}: not a valid environment variable")
    return FrozenEnv(table)


def _octal(text: str) -> int:
    if not re.fullmatch(r"[0-7]{3,4}", text):
        raise _BadValueError(f'must be 3 or 4 octal digits like "0660", not {text!r}')
    return int(text, 8)


_ARGV: Final = _typed("a string or an array of strings", (str, list), _argv)
_CONVERTERS: Final[dict[str, Callable[[object], Any]]] = {
    "string": _typed("a string", (str,)),
    "integer": _typed("an integer", (int,), int),
    "number": _typed("a number", (int, float), lambda v: float(v) if abs(v) < 1e18 else math.inf),
    "path": _typed("a string", (str,), Path),
    "array of strings": _typed("an array of strings", (list,), _STRINGS),
    "string or array of strings": _typed("a string or an array of strings", (str, list),
                                         lambda v: (v,) if isinstance(v, str) else _STRINGS(v)),
    "command": _typed("a string or an array of strings", (str, list),
                      lambda v: _argv(v, empty_ok=True)),
    "array of commands": _typed("an array of commands", (list,), _each(_ARGV)),
    "table of strings": _typed("a table of strings", (dict,), _env),
    # A string, because TOML's 660 is decimal (0o1224): a wrong mode, silently.
    "octal string": _typed('a string of octal digits like "0660"', (str,), _octal),
    "array of two integers": _typed("an array of two integers", (list,),
                                    _each(_typed("an integer", (int,), int))),
}
Check = Callable[[Any], "str | None"]


def _one_of(*choices: str) -> Check:
    return lambda v: None if v in choices else f"must be one of {' | '.join(choices)}, not {v!r}"


def _relative(path: str) -> str | None:
    parts = PurePosixPath(path).parts
    if not path or path.startswith("/") or ".." in parts:
        return f"{path!r} must be a relative path without '..'"
    if not parts:  # ".", "./": the release (or shared/) itself, which a link would replace
        return f"{path!r} names the directory itself, not a path inside it"
    return "must not contain a NUL character" if "\0" in path else None


def _url(url: str) -> str | None:
    """Why health.nginx_url cannot be requested, if it cannot (urllib raises late)."""
    if not url.startswith(("http://", "https://")):
        return "must start with http:// or https://"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range or not a number
    except ValueError as e:  # "Invalid IPv6 URL", "Port out of range 0-65535"
        return f"{url!r} is not a valid URL: {e}"
    return None if parts.hostname else f"{url!r} has no host"


def _placeholders(argv: tuple[str, ...]) -> str | None:
    """Why supervisor.kinds' str.format_map would fail on *argv*, if it would."""
    try:
        names = {f for part in argv for _, f, _, _ in Formatter().parse(part) if f is not None}
    except ValueError as e:  # a stray brace
        return f"{e}; write {{{{ or }}}} for a literal brace"
    unknown = sorted(names - {"socket", "release", "root"})
    return f"unknown placeholder {{{unknown[0]}}}" if unknown else None


def _check_mode(mode: int) -> str | None:
    problems = ((mode > 0o777, "sets setuid, setgid or sticky bits; at most 0777"),
                (mode & 0o007 == 0o007, "gives rwx to other users (never 0777)"),
                (mode & 0o600 != 0o600, "must let the owner read and write"))
    return next((f"{mode:04o} {why}" for bad, why in problems if bad), None)


def _at_least(low: float, *, above: bool = False) -> Check:
    """A number check: finite and at least (or above) *low*."""
    return lambda v: None if (v > low if above else v >= low) and v < math.inf else (
        f"must be a finite number above {low:g}" if above else f"must be at least {low:g}")


_POSITIVE: Final = _at_least(0, above=True)
_AT_LEAST_0: Final = _at_least(0)
_CHECKS: Final[dict[str, Check]] = {
    "app.name": lambda v: None if NAME_RE.fullmatch(v) else f"must match {NAME_RE.pattern}",
    "app.repo": lambda v: None if v else "must not be empty",
    "app.root": lambda v: None if v.is_absolute() else "must be an absolute path",
    "app.keep_releases": lambda v: None if v >= 1 else "must be at least 1",
    "build.python": lambda v: None if v else "must not be empty",
    "build.requirements": lambda v: next(filter(None, map(_relative, v)), None),
    "build.shared": lambda v: next(filter(None, map(_relative, v)), None),
    "server.kind": _one_of("gunicorn", "uwsgi", "command"),
    "server.app": lambda v: "must not start with -" if v.startswith("-") else None,
    "server.wsgi_file": lambda v: _relative(v) if v else None,
    "server.protocol": _one_of("http", "uwsgi"),
    "server.workers": lambda v: None if 1 <= v <= 512 else "must be between 1 and 512",
    "server.command": _placeholders,
    "server.env_file": lambda v: _relative(v) if v else None,
    "server.socket_mode": _check_mode,
    "health.path": lambda v: None if v.startswith("/") else "must start with /",
    "health.expect": lambda v: None if len(v) == 2 and 100 <= v[0] <= v[1] <= 599
    else "must be [low, high] with 100 <= low <= high <= 599",
    "health.timeout": _POSITIVE,
    "health.nginx_url": lambda v: _url(v) if v else None,
    "swap.drain_timeout": _POSITIVE,
    "swap.stop_timeout": _POSITIVE,
    "swap.keep_warm": _AT_LEAST_0,
    "swap.verify_window": _AT_LEAST_0,
    "swap.live_check_interval": _POSITIVE,
    "restart.policy": _one_of("always", "on-failure", "never"),
    "restart.backoff_max": _POSITIVE,
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


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _load_table(path: Path, table: str, cls: type[Any], raw: object) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(path, table, f"expected a table, got {_kind(raw)}")
    keys = {key.name: key for key in fields(cls)}
    for name in raw:
        if name not in keys:
            raise ConfigError(path, f"{table}.{name}", "unknown key" + _did_you_mean(name, keys))
    values: dict[str, Any] = {}
    for name, key in keys.items():
        dotted = f"{table}.{name}"
        if name in raw:
            try:
                values[name] = _CONVERTERS[key.metadata["type"]](raw[name])
            except _BadValueError as e:
                raise ConfigError(path, dotted, str(e)) from None
            reason = _CHECKS.get(dotted, lambda _: None)(values[name])
            if reason:
                raise ConfigError(path, dotted, reason)
        elif key.default is MISSING:
            raise ConfigError(path, dotted, "required")
    return cls(**values)


def load_config(path: Path) -> Config:
    """Read and validate *path*; every problem is a ConfigError naming file, key and reason."""
    try:
        data = tomllib.loads(path.read_bytes().decode())
    except FileNotFoundError:
        raise ConfigError(path, "", "no such file") from None
    except OSError as e:
        raise ConfigError(path, "", f"cannot read: {e.strerror or e}") from None
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:  # with line and column
        raise ConfigError(path, "", f"invalid TOML: {e}") from None
    for table in data:
        if table not in TABLES:
            raise ConfigError(path, table, "unknown table" + _did_you_mean(table, TABLES))
    config = Config(path=path, **{name: _load_table(path, name, cls, data.get(name, {}))
                                  for name, cls in TABLES.items()})
    for broken, key, reason in _SERVER_RULES:
        if broken(config.server):
            raise ConfigError(path, key, reason)
    return config


def _toml(value: object, type_name: str = "") -> str:
    """*value* as TOML text (the subset config values use)."""
    if type_name == "octal string":
        return f'"{value:04o}"'
    if isinstance(value, str | PurePath):
        return json.dumps(str(value), ensure_ascii=False)  # JSON escapes are valid TOML ones
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{_toml(k)} = {_toml(v)}" for k, v in value.items()) + "}"
    return str(value)


def schema() -> list[tuple[str, str, str, str]]:
    """(dotted key, type name, default as TOML text or "" if required, doc) for every key."""
    return [(f"{table}.{key.name}", key.metadata["type"],
             "" if key.default is MISSING else _toml(key.default, key.metadata["type"]),
             key.metadata["doc"]) for table, cls in TABLES.items() for key in fields(cls)]


def example_config(*, name: str, repo: str, root: Path, app: str = "wsgi:application") -> str:
    """A commented relman.toml with every key at its default; load_config() accepts it."""
    given = {"app.name": name, "app.repo": repo, "app.root": root, "server.app": app}
    lines = ["# relman.toml: see relman.toml(5). Every key is shown at its default."]
    for dotted, type_name, default, doc in schema():
        section, key = dotted.split(".")
        if f"[{section}]" not in lines:
            lines += ["", f"[{section}]"]
        value = _toml(given[dotted], type_name) if dotted in given else default
        lines.append(f"{key} = {value}".ljust(37) + f" # {doc}")
    return "\n".join(lines) + "\n"

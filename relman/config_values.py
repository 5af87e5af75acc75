"""The value side of relman.toml: read-only mappings, one converter per TOML type name, the
checks keys share, and values written back as TOML text or plain JSON.

relman.config names the keys (dataclass fields whose metadata carries the type name and doc
line); this module knows what each type name accepts. relman.settings uses the same
converters and checks to read the settings a manifest stored, so a manifest never holds a
value the config file could not.
"""

from __future__ import annotations

import json
import math
import re
import shlex
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import MISSING, field, fields
from pathlib import Path, PurePath, PurePosixPath
from string import Formatter
from typing import Any, Final, TypeVar, final
from urllib.parse import urlsplit

from relman.errors import ConfigError

V = TypeVar("V")


def key(default: object, type_name: str, doc: str) -> Any:
    """A config key with a default: a dataclass field carrying its type name and doc line."""
    return field(default=default, metadata={"type": type_name, "doc": doc})


class FrozenMap(Mapping[str, V]):
    """A read-only, hashable mapping (in insertion order) that copies and pickles."""
    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, V] | None = None) -> None:
        self._items: dict[str, V] = dict(items or {})

    def __getitem__(self, key: str) -> V:
        return self._items[key]
    def __iter__(self) -> Iterator[str]:
        return iter(self._items)
    def __len__(self) -> int:
        return len(self._items)
    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._items!r})"
    def __hash__(self) -> int:
        return hash(frozenset(self._items.items()))


@final
class FrozenEnv(FrozenMap[str]):
    """server.env: a FrozenMap of str whose repr shows the names only (values may be secrets)."""
    __slots__ = ()

    def __repr__(self) -> str:
        return f"FrozenEnv({sorted(self)!r})"


class BadValue(Exception):
    """Why a value is wrong; the caller adds the file and the key."""


def kind_of(value: object) -> str:
    """'an integer', 'a table': what a TOML value is, for error messages."""
    kinds = ((bool, "a boolean"), (int, "an integer"), (float, "a float"), (str, "a string"),
             (list, "an array"), (dict, "a table"))
    return next((name for cls, name in kinds if isinstance(value, cls)), "a date or time")


def _typed(what: str, types: tuple[type, ...], make: Callable[[Any], Any] = str) -> Any:
    """A converter: accepts instances of *types* and builds the field value with *make*."""
    def convert(value: object) -> Any:
        if isinstance(value, bool) or not isinstance(value, types):  # TOML's true is not 1
            raise BadValue(f"expected {what}, got {kind_of(value)}")
        return make(value)
    return convert


def _each(convert: Callable[[object], Any]) -> Callable[[list[Any]], tuple[Any, ...]]:
    """A converter for arrays: applies *convert* to every item, naming the item on error."""
    def each(items: list[Any]) -> tuple[Any, ...]:
        converted = []
        for i, item in enumerate(items, 1):
            try:
                converted.append(convert(item))
            except BadValue as e:
                raise BadValue(f"item {i}: {e}") from None
        return tuple(converted)
    return each


_STRINGS: Final = _each(_typed("a string", (str,)))


def _argv(value: str | list[Any], *, empty_ok: bool = False) -> tuple[str, ...]:
    """A command: a string split as a POSIX shell would (no expansion), or an argv array."""
    try:
        argv = _STRINGS(value) if isinstance(value, list) else tuple(shlex.split(value))
    except ValueError as e:  # from shlex: an unclosed quote or a trailing backslash
        raise BadValue(f"cannot split {value!r}: {e}") from None
    if not argv and not empty_ok:
        raise BadValue("empty command")
    return argv


def _env(table: dict[str, Any]) -> FrozenEnv:
    for name, text in table.items():
        if not isinstance(text, str):
            raise BadValue(f"{name}: expected a string, got {kind_of(text)}")
        if not name or "=" in name or "\0" in name + text:  # execve() refuses these
            raise BadValue(f"{name!r}: not a valid environment variable")
    return FrozenEnv(table)


def _octal(text: str) -> int:
    if not re.fullmatch(r"[0-7]{3,4}", text):
        raise BadValue(f'must be 3 or 4 octal digits like "0660", not {text!r}')
    return int(text, 8)


def _bad_boolean(value: object) -> bool:
    raise BadValue(f"expected true or false, got {kind_of(value)}")


_ARGV: Final = _typed("a string or an array of strings", (str, list), _argv)
CONVERTERS: Final[dict[str, Callable[[object], Any]]] = {
    "string": _typed("a string", (str,)),
    "boolean": lambda v: v if isinstance(v, bool) else _bad_boolean(v),
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


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the choice closest to a misspelt *word*, or ''."""
    import difflib  # only for a config error: the daemon runs without it (issue 11)

    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def one_of(*choices: str) -> Check:
    return lambda v: None if v in choices else f"must be one of {' | '.join(choices)}, not {v!r}"


def relative(path: str) -> str | None:
    parts = PurePosixPath(path).parts
    if not path or path.startswith("/") or ".." in parts:
        return f"{path!r} must be a relative path without '..'"
    if not parts:  # ".", "./": the release (or shared/) itself, which a link would replace
        return f"{path!r} names the directory itself, not a path inside it"
    return "must not contain a NUL character" if "\0" in path else None


def url(text: str) -> str | None:
    """Why health.nginx_url cannot be requested, if it cannot (urllib raises late)."""
    if not text.startswith(("http://", "https://")):
        return "must start with http:// or https://"
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError for a port out of range or not a number
    except ValueError as e:  # "Invalid IPv6 URL", "Port out of range 0-65535"
        return f"{text!r} is not a valid URL: {e}"
    return None if parts.hostname else f"{text!r} has no host"


def placeholders(*allowed: str) -> Check:
    """A command check: why str.format_map with only *allowed* would fail, if it would."""
    def check(argv: tuple[str, ...]) -> str | None:
        try:
            names = {f for part in argv for _, f, _, _ in Formatter().parse(part)
                     if f is not None}
        except ValueError as e:  # a stray brace
            return f"{e}; write {{{{ or }}}} for a literal brace"
        unknown = sorted(names - set(allowed))
        return f"unknown placeholder {{{unknown[0]}}}" if unknown else None
    return check


def check_mode(mode: int) -> str | None:
    problems = ((mode > 0o777, "sets setuid, setgid or sticky bits; at most 0777"),
                (mode & 0o007 == 0o007, "gives rwx to other users (never 0777)"),
                (mode & 0o600 != 0o600, "must let the owner read and write"))
    return next((f"{mode:04o} {why}" for bad, why in problems if bad), None)


def at_least(low: float, *, above: bool = False) -> Check:
    """A number check: finite and at least (or above) *low*."""
    return lambda v: None if (v > low if above else v >= low) and v < math.inf else (
        f"must be a finite number above {low:g}" if above else f"must be at least {low:g}")


def plain(value: object, type_name: str = "") -> Any:
    """*value* as the TOML file would spell it, in plain JSON types: tuples as lists, a
    mode as its octal string, paths as strings. CONVERTERS[type_name] reads it back."""
    if type_name == "octal string":
        return f"{value:04o}"
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, tuple | list):
        return [plain(item) for item in value]
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    return value


def toml_text(value: object, type_name: str = "") -> str:
    """*value* as TOML text (the subset config values use)."""
    value = plain(value, type_name)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # JSON escapes are valid TOML ones
    if isinstance(value, list):
        return "[" + ", ".join(toml_text(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_text(k)} = {toml_text(v)}" for k, v in value.items()) + "}"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def load_table(path: Path, table: str, cls: type[Any], raw: object,
               checks: Mapping[str, Check]) -> Any:
    """*raw*, the TOML table *table* of *path*, as a *cls* (a dataclass of key() fields):
    each value converted by its type and checked by *checks* (by key name); unknown keys
    (with a did-you-mean), missing required ones, bad values: a ConfigError naming
    "table.key" and the reason."""
    if not isinstance(raw, dict):
        raise ConfigError(path, table, f"expected a table, got {kind_of(raw)}")
    keys = {key.name: key for key in fields(cls)}
    for name in raw:
        if name not in keys:
            raise ConfigError(path, f"{table}.{name}", "unknown key" + did_you_mean(name, keys))
    values: dict[str, Any] = {}
    for name, key in keys.items():
        dotted = f"{table}.{name}"
        if name in raw:
            try:
                values[name] = CONVERTERS[key.metadata["type"]](raw[name])
            except BadValue as e:
                raise ConfigError(path, dotted, str(e)) from None
            reason = checks.get(name, lambda _: None)(values[name])
            if reason:
                raise ConfigError(path, dotted, reason)
        elif key.default is MISSING:
            raise ConfigError(path, dotted, "required")
    return cls(**values)

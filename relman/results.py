"""What the daemon answers over the control socket, as frozen dataclasses both ends share.

Standard library only: the CLI imports it (relman/client.py) for every request to the
daemon, over SSH too. Each answer has to_json(), which is what the daemon sends and what `--json`
prints, and from_json(), which checks the type of every field and raises BadAnswer naming
the field (`servers[0].pid: expected an integer, got a string`) instead of a KeyError or a
TypeError somewhere in the CLI. A field with a default may be missing, as in an older
daemon's answer; keys this CLI does not know, a newer daemon's, are ignored.

A field marked FLAT is a nested result whose keys sit in its parent's JSON object: the
figures of a server line are `rss`, `cpu_percent`, ... beside its `pid`, as they always were.
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from dataclasses import MISSING, Field, dataclass, field, fields
from typing import Any, ClassVar, Final, Self, final, get_args, get_origin, get_type_hints

from relman.errors import BadAnswer

FLAT: Final[Mapping[str, bool]] = {"flat": True}


class Result:
    """Base of every answer: JSON out and in, driven by the dataclass fields' types."""

    __slots__ = ()
    __dataclass_fields__: ClassVar[dict[str, Field[Any]]]

    def to_json(self) -> dict[str, object]:
        """The JSON object the daemon sends and `--json` prints."""
        data: dict[str, object] = {}
        for f in fields(self):
            value = _dump(getattr(self, f.name))
            if f.metadata.get("flat"):
                if isinstance(value, dict):
                    data.update(value)
            else:
                data[f.name] = value
        return data

    @classmethod
    def from_json(cls, data: object) -> Self:
        """The answer in *data*, every field checked; BadAnswer naming the first bad one."""
        return cls._parse(data, "")

    @classmethod
    def _parse(cls, data: object, where: str) -> Self:
        if not isinstance(data, dict):
            raise BadAnswer(where or "the answer", f"expected an object, got {json_kind(data)}")
        hints = _hints(cls)
        values: dict[str, object] = {}
        for f in fields(cls):
            path = f"{where}.{f.name}" if where else f.name
            if f.metadata.get("flat"):
                inner = _result_in(hints[f.name])
                if _optional(hints[f.name]) and not any(g.name in data for g in fields(inner)):
                    values[f.name] = None
                else:
                    values[f.name] = inner._parse(data, where)
            elif f.name in data:
                values[f.name] = _load(hints[f.name], data[f.name], path)
            elif f.default is MISSING and f.default_factory is MISSING:
                raise BadAnswer(path, "missing")
        return cls(**values)


_HINTS: dict[type, dict[str, Any]] = {}  # the field types of each class, read once


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = get_type_hints(cls)
    return _HINTS[cls]


def _optional(kind: Any) -> bool:
    return get_origin(kind) is types.UnionType and type(None) in get_args(kind)


def _result_in(kind: Any) -> type[Result]:
    """Result class of a field typed `SomeResult` or `SomeResult | None`."""
    for candidate in (kind, *get_args(kind)):
        if isinstance(candidate, type) and issubclass(candidate, Result):
            return candidate
    raise TypeError(f"relman.results: {kind!r} is not a Result")  # a bug in this module


def _load(kind: Any, value: object, where: str) -> object:
    """*value* checked against the field type *kind*."""
    if _optional(kind):
        if value is None:
            return None
        (kind,) = (k for k in get_args(kind) if k is not type(None))
    if get_origin(kind) is tuple:
        if not isinstance(value, list):
            raise BadAnswer(where, f"expected an array, got {json_kind(value)}")
        item = get_args(kind)[0]
        return tuple(_load(item, v, f"{where}[{i}]") for i, v in enumerate(value))
    if isinstance(kind, type) and issubclass(kind, Result):
        return kind._parse(value, where)
    if kind is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if kind in (int, str, bool) and isinstance(value, kind) and \
            (kind is bool or not isinstance(value, bool)):
        return value
    if kind not in (int, float, str, bool):
        raise TypeError(f"relman.results: no reader for {kind!r}")  # a bug in this module
    raise BadAnswer(where, f"expected {_NAMES[kind]}, got {json_kind(value)}")


_NAMES: Final[Mapping[type, str]] = {int: "an integer", float: "a number", str: "a string",
                                     bool: "a boolean"}


def json_kind(value: object) -> str:
    """What a JSON value is, for error messages: 'a string', 'an array', 'null', ..."""
    kinds = ((bool, "a boolean"), (int, "an integer"), (float, "a number"), (str, "a string"),
             (list, "an array"), (dict, "an object"))
    return next((name for cls, name in kinds if isinstance(value, cls)), "null")


def _dump(value: object) -> object:
    if isinstance(value, Result):
        return value.to_json()
    if isinstance(value, tuple):
        return [_dump(v) for v in value]
    return value


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class Progress(Result):
    """One step of a job as it happens: `[step] message`."""

    step: str = ""
    message: str = ""

    def to_json(self) -> dict[str, object]:
        return {"type": "progress", "step": self.step, "message": self.message}


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class PruneResult(Result):
    """Releases and virtualenvs removed beyond keep_releases (`relman prune`, and each deploy)."""

    releases: tuple[str, ...] = ()
    venvs: tuple[str, ...] = ()


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class DeployResult(Result):
    release: str
    sha: str
    ref: str
    switch_ms: float = 0.0  # daemon work from the job's start to the switch
    pruned: PruneResult = field(default_factory=PruneResult)


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class PrepareResult(Result):
    """`deploy --prepare` and `rollback --prepare`: the release prepared on next.sock, and
    when it expires; or (*live*) that the release is live already and nothing was started.
    A release prepared already answers with its candidate's deadline, unchanged."""

    release: str  # the release id: the same on every host of a fleet
    sha: str  # its commit
    ref: str  # the ref asked for (rollback --prepare: the ref the release was deployed as)
    prepared_until: float  # epoch seconds the candidate is stopped at; 0 when *live*
    live: bool = False  # the release is live already: nothing prepared, nothing to switch
    expires_in: float = 0.0  # seconds until prepared_until, by the host's own clock (a
    # fleet coordinator counts from its receipt: no two machines' clocks compared)


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class BuildResult(Result):
    """`deploy --build-only`: the release fetched and built, nothing started or switched
    (`deploy REF --prepare --no-release-phase` reuses the build)."""

    release: str  # the release id
    sha: str  # its commit
    ref: str  # the ref asked for


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class AbortResult(Result):
    release: str
    candidate: str  # the instance stopped


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class RollbackResult(Result):
    release: str
    sha: str
    switch_ms: float = 0.0


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class RestartResult(Result):
    release: str
    switch_ms: float = 0.0


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class StartResult(Result):
    release: str
    pid: int = 0  # the web server's; 0 without one (kind = "none")
    started: tuple[str, ...] = ()  # process instances started


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class StopResult(Result):
    stopped: bool = True


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class Pong(Result):
    """The answer to `ping`: the daemon is there, and which relman it runs."""

    pid: int
    version: str


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class Figures(Result):
    """A process and its descendants (the workers), as psutil saw them."""

    workers: int
    rss: int  # bytes
    cpu_percent: float
    uptime: float  # seconds


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class DaemonInfo(Result):
    """The daemon itself: its pid, the relman it runs, and its own figures."""

    pid: int
    version: str
    figures: Figures = field(metadata=FLAT)


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class Health(Result):
    """The live server's answer to the health path, straight on its socket."""

    status: int | None  # HTTP status; None when it did not answer
    detail: str
    healthy: bool


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class ServerLine(Result):
    """One app server instance the daemon supervises, with its figures when psutil has them."""

    instance: str
    release: str
    pid: int
    state: str
    socket: str
    started: float
    live: bool = False
    figures: Figures | None = field(default=None, metadata=FLAT)
    process: str = "web"  # or the NAME of [processes.NAME]; socket is then ""
    index: int = 1  # which instance of the process (1..count)
    restarts: int = 0  # crash restarts of this slot since the daemon started


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class ProcessCount(Result):
    """One process type of the live release: how many should run and how many do."""

    name: str
    wanted: int
    running: int
    scaled: bool = False  # *wanted* is `relman scale`'s, not the release's settings


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class PsResult(Result):
    """`relman ps`: every instance, web server included, and the counts per type."""

    release: str | None = None  # the live release
    instances: tuple[ServerLine, ...] = ()
    counts: tuple[ProcessCount, ...] = ()


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class ScaleResult(Result):
    """`relman scale`: the counts now, and the instances it started and stopped."""

    release: str | None = None
    counts: tuple[ProcessCount, ...] = ()
    started: tuple[str, ...] = ()
    stopped: tuple[str, ...] = ()


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class JobInfo(Result):
    """The job in progress, as its journal entry says (relman/journal.py)."""

    job: str
    job_id: str = ""
    release: str = ""
    ref: str = ""
    who: str = ""
    step: str = "begun"
    candidate: str = ""
    previous: str = ""
    previous_release: str = ""
    started: float = 0.0
    updated: float = 0.0


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class Status(Result):
    """`relman status`: the daemon, the live release, the servers, health, the job."""

    app: str
    daemon: DaemonInfo
    live: str | None = None  # release of the live server, while it runs
    current: str | None = None  # release `current` points at
    rollback_target: str | None = None
    health: Health | None = None
    servers: tuple[ServerLine, ...] = ()
    job: JobInfo | None = None
    crash_loop: str | None = None  # what the crash-loop detector says, while it lasts
    processes: tuple[ProcessCount, ...] = ()
    prepared: str | None = None  # release prepared on next.sock (deploy --prepare)
    prepared_until: float | None = None  # when it expires (epoch)

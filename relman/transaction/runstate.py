"""RunState: the one record of what runs (STYLE practice 20): every server and process
instance and its role, the release `current` was linked to, the last switch with its
probation, the warm instance's deadline and the counts `relman scale` set. It changes only
through advance(), fed events; it is pure (the clock is an argument), so probation and warm
windows are unit-tested without sleeping.

Times are wall-clock (time.time()): a record outlives the daemon, and must mean the same
to the next one, which time.monotonic() does not promise across a reboot.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Final


class Role(StrEnum):
    """What an instance is for; its process lifecycle is the supervisor's ServerState."""

    CANDIDATE = "candidate"  # started by a job, not live yet
    LIVE = "live"            # run/app.sock leads to it
    WARM = "warm"            # the previous live release, kept running for a fast rollback
    RETIRING = "retiring"    # was live: draining, then stopped or kept warm


WEB: Final = "web"  # the process name of the [server]


@dataclass(frozen=True, slots=True)
class Instance:
    """One unit: the web server (`<release>.<gen>`) or instance *index* of a process type
    (`<release>.<process>.<index>.<gen>`). Its slot, (process, index), is what a newer
    instance replaces: a role is unique per slot (one live web server, one live worker 2)."""

    name: str
    release: str
    role: Role
    process: str = WEB
    index: int = 1

    @property
    def slot(self) -> tuple[str, int]:
        return (self.process, self.index)


@dataclass(frozen=True, slots=True)
class Switch:
    """The last switch to a different release: its probation runs from *at* to *until*
    (swap.verify_window as it was then: a reload may shorten one, never reopen it)."""

    release: str = ""
    at: float = 0.0
    until: float = 0.0
    settled: bool = False  # its one automatic rollback is spent (or it came from one)

    @property
    def key(self) -> tuple[str, float]:
        """What tells one switch from another."""
        return (self.release, self.at)


@dataclass(frozen=True, slots=True)
class RunState:
    linked: str = ""  # the release relman linked `current` to
    instances: tuple[Instance, ...] = ()
    switch: Switch = field(default_factory=Switch)
    warm_until: float = 0.0  # when the warm instance's keep_warm window ends
    scale: tuple[tuple[str, int], ...] = ()  # `relman scale` counts, by process name

    def role(self, role: Role) -> Instance | None:
        """The web instance in *role*."""
        return next((i for i in self.instances if i.role is role and i.process == WEB), None)

    def processes(self, release: str | None = None) -> tuple[Instance, ...]:
        """The process instances (not the web server), of *release* if given."""
        return tuple(i for i in self.instances if i.process != WEB
                     and (release is None or i.release == release))

    @property
    def live(self) -> Instance | None:
        return self.role(Role.LIVE)

    @property
    def warm(self) -> Instance | None:
        return self.role(Role.WARM)

    def get(self, name: str) -> Instance | None:
        return next((i for i in self.instances if i.name == name), None)

    @property
    def scaled(self) -> dict[str, int]:
        return dict(self.scale)


# --- events -------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Started:
    """A job or a restart started *name*; a reconcile adopted it (as *role*)."""

    name: str
    release: str
    role: Role = Role.CANDIDATE
    process: str = WEB
    index: int = 1


@dataclass(frozen=True, slots=True)
class Adopted:
    """A restarted daemon found *name* running, or a handover promotes it: it takes *role*
    (an instance already in the record keeps its place and changes role)."""

    name: str
    release: str
    role: Role
    process: str = WEB
    index: int = 1


@dataclass(frozen=True, slots=True)
class SwitchedTo:
    """run/app.sock and `current` now lead to *name* (with no web server, kind = "none":
    *name* is "" and `current` leads to *release*). A switch to another release than the
    live one opens its probation of *window* seconds, unless *settled*."""

    name: str
    window: float
    settled: bool = False
    release: str = ""


@dataclass(frozen=True, slots=True)
class SwitchedBack:
    """A failed swap put things back: *name* (or nobody) is live again, `current` names
    *linked*, and the switch before the failed one is the last switch again."""

    name: str | None
    linked: str
    switch: Switch


@dataclass(frozen=True, slots=True)
class KeptWarm:
    """*name* stays running *seconds* more for a fast rollback (until *until*, when given:
    a restarted daemon keeps the deadline it found, not a fresh one); any other warm
    instance is to be stopped (only the previous release stays warm)."""

    name: str
    seconds: float
    until: float = 0.0


@dataclass(frozen=True, slots=True)
class Retired:
    """*name* is leaving: drained and being stopped (a warm one whose window ended)."""

    name: str


@dataclass(frozen=True, slots=True)
class Gone:
    """*name*'s processes are gone: stopped, or crashed."""

    name: str


@dataclass(frozen=True, slots=True)
class Settled:
    """The switch *key* had its one automatic rollback, done or not."""

    key: tuple[str, float]


@dataclass(frozen=True, slots=True)
class Relinked:
    """`current` was linked to *release* outside a switch (recovery, a refused flip)."""

    release: str


@dataclass(frozen=True, slots=True)
class Scaled:
    """`relman scale`: these counts hold until changed, across deploys and rollbacks; a
    count of None goes back to the release's settings (`--reset`: every name)."""

    counts: tuple[tuple[str, int | None], ...] = ()
    reset: bool = False


Event = (Started | Adopted | SwitchedTo | SwitchedBack | KeptWarm | Retired | Gone | Settled
         | Relinked | Scaled)


class IllegalEvent(Exception):
    """An event the record cannot take: a bug, not user error."""


def _set_role(instances: tuple[Instance, ...], name: str, role: Role) -> tuple[Instance, ...]:
    if not any(i.name == name for i in instances):
        raise IllegalEvent(f"no instance {name} to make {role}")
    return tuple(replace(i, role=role) if i.name == name else i for i in instances)


def _demote(instances: tuple[Instance, ...], role: Role, keep: str,
            slot: tuple[str, int] = (WEB, 1)) -> tuple[Instance, ...]:
    """Every instance of *slot* in *role* but *keep* becomes RETIRING."""
    return tuple(replace(i, role=Role.RETIRING)
                 if i.role is role and i.name != keep and i.slot == slot else i
                 for i in instances)


def _switched_to(state: RunState, event: SwitchedTo, now: float) -> RunState:
    before = state.live
    if event.name:
        target = state.get(event.name)
        if target is None or target.process != WEB:
            raise IllegalEvent(f"no web instance {event.name} to switch to")
        release = target.release
        instances = _set_role(_demote(state.instances, Role.LIVE, event.name), event.name,
                              Role.LIVE)
    elif event.release:  # no web server: `current` is the switch
        release, instances = event.release, state.instances
    else:
        raise IllegalEvent("a switch to nothing")
    switch = state.switch
    # A restart of the live release is no new switch; nor is starting the linked release
    # again after its server crashed.
    if (before.release if before is not None else state.linked) != release:
        switch = Switch(release=release, at=now, until=now + event.window,
                        settled=event.settled)
    warm_until = state.warm_until if any(i.role is Role.WARM for i in instances) else 0.0
    return replace(state, linked=release, instances=instances, switch=switch,
                   warm_until=warm_until)


def _started(state: RunState, event: Started | Adopted, _now: float) -> RunState:
    instances = state.instances
    if event.role in (Role.LIVE, Role.WARM):
        instances = _demote(instances, event.role, event.name, (event.process, event.index))
    if state.get(event.name) is None:
        return replace(state, instances=(*instances, Instance(
            event.name, event.release, event.role, event.process, event.index)))
    if isinstance(event, Started):
        raise IllegalEvent(f"instance {event.name} started twice")
    instances = _set_role(instances, event.name, event.role)
    # A warm instance taken over as a candidate (rollback --prepare) ends the warm window.
    warm_until = state.warm_until if any(i.role is Role.WARM for i in instances) else 0.0
    return replace(state, instances=instances, warm_until=warm_until)


def _switched_back(state: RunState, event: SwitchedBack, _now: float) -> RunState:
    instances = _demote(state.instances, Role.LIVE, event.name or "")
    if event.name is not None:
        instances = _set_role(instances, event.name, Role.LIVE)
    return replace(state, linked=event.linked, instances=instances, switch=event.switch)


def _kept_warm(state: RunState, event: KeptWarm, now: float) -> RunState:
    instances = _set_role(_demote(state.instances, Role.WARM, event.name), event.name,
                          Role.WARM)
    return replace(state, instances=instances, warm_until=event.until or now + event.seconds)


def _leaving(state: RunState, event: Retired | Gone, _now: float) -> RunState:
    was = state.get(event.name)
    if was is None:
        return state
    warm_until = 0.0 if was.role is Role.WARM else state.warm_until
    if isinstance(event, Retired):
        instances = _set_role(state.instances, event.name, Role.RETIRING)
    else:
        instances = tuple(i for i in state.instances if i.name != event.name)
    return replace(state, instances=instances, warm_until=warm_until)


def _settled(state: RunState, event: Settled, _now: float) -> RunState:
    if state.switch.key != event.key:
        return state
    return replace(state, switch=replace(state.switch, settled=True))


def _relinked(state: RunState, event: Relinked, _now: float) -> RunState:
    return replace(state, linked=event.release)


def _scaled(state: RunState, event: Scaled, _now: float) -> RunState:
    counts = {} if event.reset else dict(state.scale)
    for name, count in event.counts:
        if count is None:
            counts.pop(name, None)
        elif count < 0:
            raise IllegalEvent(f"{name}={count}: a count is never negative")
        else:
            counts[name] = count
    return replace(state, scale=tuple(sorted(counts.items())))


_HANDLERS: Final[dict[type, Callable[[RunState, Any, float], RunState]]] = {
    Started: _started, Adopted: _started, SwitchedTo: _switched_to,
    SwitchedBack: _switched_back, KeptWarm: _kept_warm, Retired: _leaving, Gone: _leaving,
    Settled: _settled, Relinked: _relinked, Scaled: _scaled,
}


def advance(state: RunState, event: Event, now: float) -> RunState:
    """The one transition function of the run record: the state after *event* at *now*."""
    handler = _HANDLERS.get(type(event))
    if handler is None:
        raise IllegalEvent(f"unknown event {event!r}")
    return handler(state, event, now)


# --- decisions ----------------------------------------------------------------------------

def on_probation(state: RunState, now: float, window: float) -> bool:
    """Whether the live release may still be rolled back automatically: the last switch made
    it live less than *window* seconds ago (and less than the window of its day), and that
    switch is not settled. The live release is the linked one while its server is down (a
    crash loop). A clock that went back counts as the end."""
    switch, live = state.switch, state.live
    release = live.release if live is not None else state.linked
    return (bool(switch.release) and switch.release == release and not switch.settled
            and switch.at <= now < min(switch.until, switch.at + window))


def process_counts(configured: Mapping[str, int], scale: tuple[tuple[str, int], ...]
                   ) -> dict[str, int]:
    """How many instances of each process type should run: the release's settings, with
    `relman scale`'s counts over them (for the types the release has)."""
    scaled = dict(scale)
    return {name: scaled.get(name, count) for name, count in configured.items()}


def warm_left(state: RunState, name: str, now: float) -> float:
    """Seconds *name* may stay warm: 0 unless it is the warm instance of the record and its
    keep_warm window is still open (a server nobody meant to keep is stopped)."""
    warm = state.warm
    if warm is None or warm.name != name:
        return 0.0
    return max(0.0, state.warm_until - now)


EMPTY: Final = RunState()

"""RunRecord: the owner of the RunState (runstate.py), kept in state/run.json so the next
daemon knows what this one ran, which release was live, and what the last switch's
probation and the warm window are. Events are its only input; each change is written
atomically. It absorbs state/switch.json, which older daemons kept.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from relman.atomic import set_aside, write_json_atomic
from relman.errors import RelmanError
from relman.transaction.runstate import (
    WEB,
    Event,
    Instance,
    Role,
    RunState,
    Switch,
    advance,
)

log = structlog.get_logger(__name__)

Clock = Callable[[], float]


def to_json(state: RunState) -> dict[str, Any]:
    return {"linked": state.linked,
            "instances": [{"name": i.name, "release": i.release, "role": str(i.role),
                           "process": i.process, "index": i.index}
                          for i in state.instances],
            "scale": dict(state.scale),
            "switch": {"release": state.switch.release, "at": state.switch.at,
                       "until": state.switch.until, "settled": state.switch.settled},
            "warm_until": state.warm_until}


def from_json(data: Any) -> RunState:
    """The RunState in *data*; ValueError or TypeError when it is not one."""
    if not isinstance(data, dict):
        raise TypeError("not a JSON object")
    switch = data.get("switch") or {}
    if not isinstance(switch, dict):
        raise TypeError("switch is not an object")
    instances = []
    for item in data.get("instances") or []:
        if not isinstance(item, dict):
            raise TypeError("an instance is not an object")
        index = item.get("index", 1)
        if not isinstance(index, int) or isinstance(index, bool) or index < 1:
            raise TypeError(f"index {index!r} is not a positive integer")
        instances.append(Instance(str(item["name"]), str(item["release"]),
                                  Role(item["role"]), str(item.get("process") or WEB), index))
    scale = data.get("scale") or {}
    if not isinstance(scale, dict) or not all(
            isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in scale.values()):
        raise TypeError("scale is not an object of counts")
    return RunState(linked=str(data.get("linked") or ""), instances=tuple(instances),
                    switch=Switch(release=str(switch.get("release") or ""),
                                  at=float(switch.get("at") or 0.0),
                                  until=float(switch.get("until") or 0.0),
                                  settled=bool(switch.get("settled"))),
                    warm_until=float(data.get("warm_until") or 0.0),
                    scale=tuple(sorted((str(k), v) for k, v in scale.items())))


def from_switch_json(data: Any, run_dir: Path) -> RunState:
    """What an older daemon's state/switch.json said: the last switch and the warm release
    (by release: the instance is the newest generation of it with a record in run/)."""
    if not isinstance(data, dict):
        raise TypeError("not a JSON object")
    state = RunState(switch=Switch(release=str(data.get("release") or ""),
                                   at=float(data.get("at") or 0.0),
                                   until=float(data.get("until") or 0.0),
                                   settled=bool(data.get("settled"))))
    warm = str(data.get("warm") or "")
    names = sorted((p.name.removesuffix(".pid") for p in run_dir.glob(f"{warm}.*.pid")),
                   key=lambda n: int(n.rsplit(".", 1)[1]) if n.rsplit(".", 1)[1].isdigit()
                   else 0) if warm else []
    if names:
        state = RunState(switch=state.switch, warm_until=float(data.get("warm_until") or 0.0),
                         instances=(Instance(names[-1], warm, Role.WARM),))
    return state


class RunRecord:
    """The RunState, its one writer, and its file."""

    def __init__(self, path: Path, *, legacy: Path | None = None, run_dir: Path | None = None,
                 clock: Clock = time.time) -> None:
        self.path, self.clock = path, clock
        self.state = self._load(legacy, run_dir)
        self._unsaved = False
        # Called after each change: what waits for one (the live check, outside a switch's
        # probation) sleeps on it instead of on a timer.
        self.on_change: Callable[[], None] = _nothing

    def _load(self, legacy: Path | None, run_dir: Path | None) -> RunState:
        found = _read(self.path, from_json)
        if found is None and legacy is not None:
            found = _read(legacy, lambda d: from_switch_json(d, run_dir or legacy.parent))
            if found is not None and legacy.exists():
                self._migrate(found, legacy)
        return found or RunState()

    def _migrate(self, state: RunState, legacy: Path) -> None:
        """Write what an older daemon's switch.json said as run.json, then remove it: read
        once, never again (a later loss of run.json must not bring back a stale switch)."""
        try:
            write_json_atomic(self.path, to_json(state))
            legacy.unlink()
        except (OSError, RelmanError) as e:  # a full disk: read again next time
            log.warning("run.migration_deferred", path=str(legacy), error=str(e))

    def submit(self, event: Event, *, strict: bool = False) -> RunState:
        """Apply *event*: the new state is the daemon's at once, and written to disk. A
        write the file system refuses raises when *strict* (a job's start and switch: the
        job fails and puts things back); otherwise it is a warning (supervision goes on
        while the disk is full; the next change writes the whole state again)."""
        new = advance(self.state, event, self.clock())
        if new == self.state and not self._unsaved:
            return new
        self.state = new
        self.on_change()
        log.info("run.changed", change=type(event).__name__, live=_name(new, Role.LIVE),
                 warm=_name(new, Role.WARM), linked=new.linked)
        self._unsaved = True
        try:
            write_json_atomic(self.path, to_json(new))
        except (OSError, RelmanError) as e:
            if strict:
                raise
            log.warning("run.write_failed", path=str(self.path), error=str(e))
        else:
            self._unsaved = False
        return new


def _read(path: Path, parse: Callable[[Any], RunState]) -> RunState | None:
    """*path* parsed; None when it is missing. One that cannot be read is set aside (it never
    stops the daemon) and counts as an empty record."""
    try:
        return parse(json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError, KeyError, RecursionError) as e:
        set_aside(path, reason=str(e))
        return RunState()


def _nothing() -> None:
    return None


def _name(state: RunState, role: Role) -> str:
    found = state.role(role)
    return found.name if found is not None else ""

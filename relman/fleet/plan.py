"""The coordinator's decisions, as pure functions (table-tested in tests/unit/test_fleet_plan.py):
each host's lifecycle, which hosts switch in which wave, how long the old releases stay warm,
which release a fleet rolls back to, and whether a watched canary is sick."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Any, Final

from relman.config_fleet import FleetConfig, parse_host
from relman.errors import UsageError

__all__ = ["TRANSITIONS", "HostOutcome", "agreed_rollback_target", "canary_trouble",
           "keep_warm_seconds", "release_host", "switch_waves"]


class HostOutcome(StrEnum):
    """Where one host is in a fleet deploy or rollback (the RESULT column)."""

    PENDING = "not-started"
    PREPARED = "prepared"            # its candidate waits on next.sock
    UNCHANGED = "unchanged"          # the release is live there already
    UNREACHABLE = "unreachable"      # ssh exit 255: no answer from the host
    PREPARE_FAILED = "prepare-failed"
    ABORTED = "aborted"              # its candidate stopped (or never started): another
                                     # host failed, or the coordinator was stopped
    SWITCHED = "switched"
    SWITCH_FAILED = "switch-failed"  # the host switched itself back
    SWITCHED_BACK = "switched-back"  # to its previous release, because another host failed
    BACK_FAILED = "back-failed"      # could not be switched back: still on the new release
    UNKNOWN = "unknown"              # lost during its switch: run `relman fleet status`


#: every move a host's outcome may make; anything else is a bug (FleetRun asserts it)
TRANSITIONS: Final[Mapping[HostOutcome, frozenset[HostOutcome]]] = {
    HostOutcome.PENDING: frozenset({HostOutcome.PREPARED, HostOutcome.UNCHANGED,
                                    HostOutcome.UNREACHABLE, HostOutcome.PREPARE_FAILED,
                                    HostOutcome.ABORTED}),
    HostOutcome.PREPARED: frozenset({HostOutcome.ABORTED, HostOutcome.SWITCHED,
                                     HostOutcome.SWITCH_FAILED, HostOutcome.UNKNOWN,
                                     HostOutcome.UNREACHABLE}),
    HostOutcome.SWITCHED: frozenset({HostOutcome.SWITCHED_BACK, HostOutcome.BACK_FAILED}),
    HostOutcome.UNCHANGED: frozenset(),
    HostOutcome.UNREACHABLE: frozenset(),
    HostOutcome.PREPARE_FAILED: frozenset(),
    HostOutcome.ABORTED: frozenset(),
    HostOutcome.SWITCH_FAILED: frozenset(),
    HostOutcome.SWITCHED_BACK: frozenset(),
    HostOutcome.BACK_FAILED: frozenset(),
    HostOutcome.UNKNOWN: frozenset(),
}


def release_host(fleet: FleetConfig, reachable: Sequence[str]) -> str | None:
    """The host that runs release.commands: fleet.release_host, else the first host; None
    when it is not among *reachable* (the release phase must not move to another host
    silently: it may be the one with the database's network path)."""
    wanted = fleet.release_host or fleet.hosts[0]
    target = parse_host(wanted)
    for host in reachable:
        if parse_host(host) == target:
            return host
    return None


def switch_waves(hosts: Sequence[str], fleet: FleetConfig) -> list[tuple[str, ...]]:
    """*hosts* (to switch, in [fleet] order) as waves switched one after the other: the
    first fleet.canary hosts alone, then the rest at once (together) or fleet.batch at a
    time (rolling)."""
    canary = min(fleet.canary, max(len(hosts) - 1, 0))
    waves = [tuple(hosts[:canary])] if canary else []
    rest = list(hosts[canary:])
    step = len(rest) if fleet.strategy == "together" else fleet.batch
    waves += [tuple(rest[i:i + step]) for i in range(0, len(rest), max(step, 1))]
    return waves


#: seconds a switched host keeps its old release warm per wave still to come, and beyond
WARM_PER_WAVE: Final = 30.0
WARM_MARGIN: Final = 60.0


def keep_warm_seconds(fleet: FleetConfig, waves: int) -> float:
    """`relman switch --keep-warm`: long enough for the coordinator to switch a host back
    without a cold start while the other waves and the canary watch run."""
    watch = fleet.canary_seconds if fleet.canary else 0.0
    return watch + WARM_PER_WAVE * waves + WARM_MARGIN


def agreed_rollback_target(targets: Mapping[str, str | None],
                           live: Mapping[str, str | None]) -> str:
    """The release `relman fleet rollback` (no RELEASE) goes to: every host's rollback
    target, when they agree. A host already live on it counts as agreeing (a rerun after a
    partial rollback). UsageError (exit 2) naming the hosts when they do not."""
    wanted = {t for t in targets.values() if t}
    agreed = [w for w in sorted(wanted)
              if all(targets[h] == w or live.get(h) == w for h in targets)]
    if len(agreed) == 1:
        return agreed[0]
    if not wanted:
        raise UsageError("fleet rollback: no host has a release to roll back to")
    said = ", ".join(f"{h} -> {t or 'none'}" for h, t in targets.items())
    raise UsageError(f"fleet rollback: the hosts' rollback targets differ ({said}); name "
                     "the release: relman fleet rollback RELEASE")


def canary_trouble(release: str, status: Mapping[str, Any] | None,
                   restarts_before: int) -> str | None:
    """Why a canary host running *release* is sick, from its `relman status --json`
    (None: no answer); None while it is well. *restarts_before*: its web server's crash
    restarts when it switched (any more is a crash since)."""
    if status is None:
        return "no answer to relman status"
    if status.get("live") != release:
        return f"its live release is {status.get('live') or 'none'}, not {release}"
    health = status.get("health") or {}
    if not health.get("healthy", False):
        return f"unhealthy: {health.get('detail') or 'no answer to the health check'}"
    if status.get("crash_loop"):
        return f"crash loop: {status['crash_loop']}"
    restarts = web_restarts(status)
    if restarts > restarts_before:
        return f"its web server crashed ({restarts - restarts_before} restart(s) since the switch)"
    return None


def web_restarts(status: Mapping[str, Any]) -> int:
    """Crash restarts of the live web server's slots, from `relman status --json`."""
    return sum(int(s.get("restarts", 0)) for s in status.get("servers") or ()
               if s.get("live") and s.get("process", "web") == "web")

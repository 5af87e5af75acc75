"""The coordinator's decisions, as pure functions (table-tested in tests/unit/test_fleet_plan.py):
each host's lifecycle (HostOutcome, TRANSITIONS, HostRecord), which hosts switch in which
wave, how long old releases stay warm and candidates must last, whether the switch may
start, which release a fleet rolls back to, whether a watched canary is sick, and how a
run ended."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from relman.config_fleet import FleetConfig, parse_host
from relman.errors import UsageError

__all__ = ["TRANSITIONS", "HostOutcome", "HostRecord", "IllegalTransition",
           "agreed_rollback_target", "canary_trouble", "candidates_must_last",
           "keep_warm_seconds", "outcome_of", "release_host", "switch_waves", "wanted_release_host",
           "why_not_switch"]


class HostOutcome(StrEnum):
    """Where one host is in a fleet deploy or rollback (the RESULT column)."""

    NOT_STARTED = "not-started"
    PREPARED = "prepared"            # its candidate waits on next.sock
    UNCHANGED = "unchanged"          # the release is live there already
    UNREACHABLE = "unreachable"      # ssh exit 255: no answer from the host
    PREPARE_FAILED = "prepare-failed"
    ABORTED = "aborted"              # its candidate stopped (or never started): another
                                     # host failed, or the coordinator was stopped
    SWITCHED = "switched"
    SWITCH_FAILED = "switch-failed"  # its live release serves on
    SWITCHED_BACK = "switched-back"  # to its previous release, because another host failed
    BACK_FAILED = "back-failed"      # could not be switched back: still on the new release
    UNKNOWN = "unknown"              # lost during its switch: run `relman fleet status`


_O = HostOutcome
#: every move a host's outcome may make; HostRecord.move raises IllegalTransition otherwise
TRANSITIONS: Final[Mapping[HostOutcome, frozenset[HostOutcome]]] = {
    _O.NOT_STARTED: frozenset({_O.PREPARED, _O.UNCHANGED, _O.UNREACHABLE, _O.PREPARE_FAILED,
                               _O.ABORTED}),
    _O.PREPARED: frozenset({_O.ABORTED, _O.SWITCHED, _O.SWITCH_FAILED, _O.UNKNOWN}),
    _O.SWITCHED: frozenset({_O.SWITCHED_BACK, _O.BACK_FAILED}),
    **{end: frozenset() for end in (_O.UNCHANGED, _O.UNREACHABLE, _O.PREPARE_FAILED,
                                    _O.ABORTED, _O.SWITCH_FAILED, _O.SWITCHED_BACK,
                                    _O.BACK_FAILED, _O.UNKNOWN)},
}


class IllegalTransition(AssertionError):
    """A move TRANSITIONS does not allow: a bug in the coordinator."""


@dataclass(slots=True)
class HostRecord:
    """One host's part in a fleet run, kept by the coordinator while it runs."""

    host: str
    outcome: HostOutcome = HostOutcome.NOT_STARTED
    previous: str | None = None  # the release live there before (None: nothing was)
    release: str = ""
    expires_at: float = 0.0  # the candidate's deadline on the coordinator's monotonic clock
    prepare_s: float | None = None
    switch_s: float | None = None
    detail: str = ""
    ssh_sessions: int = 0  # opened to it in the run: 1 when its `relman session` served all

    def move(self, outcome: HostOutcome, detail: str = "") -> None:
        if outcome not in TRANSITIONS[self.outcome]:
            raise IllegalTransition(f"{self.host}: {self.outcome} -> {outcome}")
        self.outcome = outcome
        if detail:
            self.detail = detail

    def to_json(self) -> dict[str, Any]:
        return {"host": self.host, "result": str(self.outcome), "release": self.release,
                "previous": self.previous, "prepare_s": self.prepare_s,
                "switch_s": self.switch_s, "detail": self.detail,
                "ssh_sessions": self.ssh_sessions}


def in_state(records: Iterable[HostRecord], *outcomes: HostOutcome) -> list[HostRecord]:
    return [r for r in records if r.outcome in outcomes]


def names(records: Iterable[HostRecord]) -> str:
    return ", ".join(r.host for r in records)


def wanted_release_host(fleet: FleetConfig) -> str:
    """fleet.release_host, else the first host (as written in [fleet] hosts)."""
    return fleet.release_host or fleet.hosts[0]


def release_host(fleet: FleetConfig, reachable: Sequence[str]) -> str | None:
    """The host that runs release.commands: fleet.release_host, else the first host; None
    when it is not among *reachable* (the release phase must not move to another host
    silently: it may be the one with the database's network path)."""
    target = parse_host(wanted_release_host(fleet))
    return next((h for h in reachable if parse_host(h) == target), None)


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


#: seconds a switch wave may take (ssh, health check, switch, verify, drain)
SECONDS_PER_WAVE: Final = 30.0
#: beyond the planned switch: for the coordinator to switch a host back warm
WARM_MARGIN: Final = 60.0
#: a candidate must outlive the planned switch by this much, or the switch does not start
EXPIRY_MARGIN: Final = 30.0


def _planned_switch(fleet: FleetConfig, waves: int) -> float:
    watch = fleet.canary_seconds if fleet.canary else 0.0
    return watch + SECONDS_PER_WAVE * waves


def keep_warm_seconds(fleet: FleetConfig, waves: int) -> float:
    """`relman switch --keep-warm`: long enough for the coordinator to switch a host back
    without a cold start while the other waves and the canary watch run."""
    return _planned_switch(fleet, waves) + WARM_MARGIN


def candidates_must_last(fleet: FleetConfig, waves: int) -> float:
    """Seconds every candidate must still have before the switch starts."""
    return _planned_switch(fleet, waves) + EXPIRY_MARGIN


def why_not_switch(records: Sequence[HostRecord], *, release_host: str | None,
                   allow_unreachable: bool, stopping: bool, must_last: float, now: float
                   ) -> str:
    """Why the switch must not start, one line; "" if it may. *release_host*: the host that
    must have prepared (a deploy's); *now* and *must_last* on the monotonic clock."""
    failed = in_state(records, _O.PREPARE_FAILED)
    unreachable = in_state(records, _O.UNREACHABLE)
    ready = in_state(records, _O.PREPARED, _O.UNCHANGED)
    if failed:
        return f"prepare failed on {names(failed)}: nobody switched"
    if unreachable and not allow_unreachable:
        return (f"unreachable: {names(unreachable)}: nobody switched "
                "(--allow-unreachable deploys to the others)")
    if release_host is not None and release_host not in {r.host for r in ready}:
        return f"the release host {release_host} did not prepare: nobody switched"
    if stopping:
        return "stopped: nobody switched"
    if not ready:
        return "no host to switch"
    releases = {r.release for r in ready}
    if len(releases) > 1:
        said = ", ".join(f"{r.host} {r.release}" for r in ready)
        return (f"the hosts prepared different releases ({said}): did the ref move while "
                "they fetched? Deploy a tag or a sha")
    soon = [r for r in in_state(records, _O.PREPARED) if r.expires_at < now + must_last]
    if soon:
        return (f"the candidates on {names(soon)} expire before the switch could end "
                f"({must_last:.0f}s); abort them or raise swap.prepare_timeout on the hosts")
    return ""


def outcome_of(command: str, records: Sequence[HostRecord], why: str) -> str:
    """How a run ended: failed (*why* says why), unchanged, deployed or rolled-back."""
    if why:
        return "failed"
    if not in_state(records, _O.SWITCHED):
        return "unchanged"
    return "deployed" if command == "deploy" else "rolled-back"


def left_mixed(records: Sequence[HostRecord], failed: bool) -> bool:
    """Some hosts are on the new release and others not: one could not be switched back
    or was lost in its switch, or a failed rerun found hosts on it already."""
    return bool(in_state(records, _O.BACK_FAILED, _O.UNKNOWN)) or (
        failed and bool(in_state(records, _O.UNCHANGED)))


def agreed_rollback_target(targets: Mapping[str, str | None],
                           live: Mapping[str, str | None]) -> str:
    """The release `relman fleet rollback` (no RELEASE) goes to: every host's rollback
    target, when they agree. A host already live on it counts as agreeing (a rerun after a
    partial rollback, where it has no other target). UsageError (exit 2) naming each host's
    live release and target when they do not."""
    wanted = {t for t in targets.values() if t}
    agreed = [w for w in sorted(wanted)
              if all(targets[h] == w or live.get(h) == w for h in targets)]
    if len(agreed) == 1:
        return agreed[0]
    if not wanted:
        raise UsageError("fleet rollback: no host has a release to roll back to")
    said = ", ".join(f"{h} live {live.get(h) or 'none'} -> {t or 'none'}"
                     for h, t in targets.items())
    raise UsageError(f"fleet rollback: the hosts' rollback targets differ ({said}); name "
                     "the release: relman fleet rollback RELEASE")


def canary_trouble(release: str, status: Mapping[str, Any] | None,
                   restarts_before: int) -> str | None:
    """Why a canary host running *release* is sick, from its `relman status --json`
    (None: no answer); None while it is well. *restarts_before*: its web server's crash
    restarts at the first look after the switch (any more is a crash since)."""
    if status is None:
        return "no answer to relman status"
    if status.get("live") != release:
        return f"its live release is {status.get('live') or 'none'}, not {release}"
    health = status.get("health")
    health = health if isinstance(health, Mapping) else {}
    if health.get("healthy") is not True:
        return f"unhealthy: {health.get('detail') or 'no answer to the health check'}"
    if status.get("crash_loop"):
        return f"crash loop: {status['crash_loop']}"
    restarts = web_restarts(status)
    if restarts > restarts_before:
        return f"its web server crashed ({restarts - restarts_before} restart(s) since the switch)"
    return None


def web_restarts(status: Mapping[str, Any]) -> int:
    """Crash restarts of the live web server's slots, from `relman status --json`."""
    servers = status.get("servers")
    return sum(s["restarts"] for s in (servers if isinstance(servers, list) else ())
               if isinstance(s, Mapping) and s.get("live") and s.get("process", "web") == "web"
               and isinstance(s.get("restarts"), int))

"""What a fleet deploy or rollback did, host by host: the record the coordinator keeps for
each host while it runs, and the final table (host, release, prepare time, switch time,
result) or its JSON."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from relman.fleet.plan import TRANSITIONS, HostOutcome

__all__ = ["FleetReport", "HostRecord", "render_report"]


@dataclass(slots=True)
class HostRecord:
    """One host's part in a fleet run; its outcome moves only as plan.TRANSITIONS allows."""

    host: str
    outcome: HostOutcome = HostOutcome.PENDING
    previous: str | None = None  # the release live there before (None: nothing was)
    release: str = ""
    prepared_until: float = 0.0
    prepare_s: float | None = None
    switch_s: float | None = None
    detail: str = ""

    def move(self, outcome: HostOutcome, detail: str = "") -> None:
        if outcome not in TRANSITIONS[self.outcome]:
            raise AssertionError(f"{self.host}: {self.outcome} -> {outcome} is no transition")
        self.outcome = outcome
        if detail:
            self.detail = detail

    def to_json(self) -> dict[str, Any]:
        return {"host": self.host, "result": str(self.outcome), "release": self.release,
                "previous": self.previous, "prepare_s": self.prepare_s,
                "switch_s": self.switch_s, "detail": self.detail}


@dataclass(frozen=True, slots=True)
class FleetReport:
    """The end of `relman fleet deploy|rollback`."""

    command: str  # deploy | rollback
    ref: str  # what was asked: the ref, or the rollback's release
    release: str  # the release id ("" when no host got as far)
    outcome: str  # deployed | rolled-back | unchanged | failed
    reason: str = ""  # why it failed, one line
    hosts: tuple[HostRecord, ...] = field(default=())

    @property
    def failed(self) -> bool:
        return self.outcome == "failed"

    @property
    def mixed(self) -> bool:
        """The hosts are left on different releases: one could not be switched back or was
        lost in its switch, or hosts where the release was live already (a rerun after a
        killed coordinator) stay on it beside hosts that failed or went back."""
        if any(h.outcome in (HostOutcome.BACK_FAILED, HostOutcome.UNKNOWN)
               for h in self.hosts):
            return True
        return len(self.left_on()) > 1

    def left_on(self) -> dict[str, list[str]]:
        """release -> the hosts this run left live on it, where that is known."""
        left: dict[str, list[str]] = {}
        for h in self.hosts:
            release = _left_on(h)
            if release:
                left.setdefault(release, []).append(h.host)
        return left

    def to_json(self) -> dict[str, Any]:
        return {"type": "fleet", "command": self.command, "ref": self.ref,
                "release": self.release, "outcome": self.outcome, "reason": self.reason,
                "mixed": self.mixed, "hosts": [h.to_json() for h in self.hosts]}


#: outcomes that leave a host on the run's release; UNREACHABLE and UNKNOWN: not known
_ON_THE_RELEASE = frozenset({HostOutcome.SWITCHED, HostOutcome.UNCHANGED,
                             HostOutcome.BACK_FAILED})


def _left_on(h: HostRecord) -> str | None:
    """The release *h* is live on after the run (None: not known, or nothing)."""
    if h.outcome in _ON_THE_RELEASE:
        return h.release or None
    if h.outcome in (HostOutcome.UNREACHABLE, HostOutcome.UNKNOWN):
        return None
    return h.previous


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}s"


def render_report(report: FleetReport) -> str:
    """The final table, then one line saying what the fleet is now."""
    rows = [("HOST", "RELEASE", "PREPARE", "SWITCH", "RESULT")]
    for h in report.hosts:
        result = f"{h.outcome}: {h.detail}" if h.detail else str(h.outcome)
        rows.append((h.host, h.release or "-", _seconds(h.prepare_s), _seconds(h.switch_s),
                     result))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=True)) + "  " + r[4]
             for r in rows]
    switched = sum(h.outcome is HostOutcome.SWITCHED for h in report.hosts)
    verb = "deployed" if report.command == "deploy" else "rolled back"
    if report.outcome == "unchanged":
        lines.append(f"{report.release} is live on every host already: nothing to do")
    elif not report.failed:
        lines.append(f"{verb} {report.ref} as {report.release} on {switched} host(s)")
    elif report.mixed:
        left = "; ".join(f"{r} on {', '.join(h)}" for r, h in report.left_on().items())
        lines.append(f"the fleet is MIXED ({left}{'; some unknown' if _unknown(report) else ''}"
                     f"): run `relman fleet status`, then `relman fleet {report.command}` "
                     "again")
    return "\n".join(lines)


def _unknown(report: FleetReport) -> bool:
    return any(h.outcome is HostOutcome.UNKNOWN for h in report.hosts)

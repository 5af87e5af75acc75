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
        """Some hosts are left on the new release and some not (a failed switch back)."""
        return any(h.outcome in (HostOutcome.BACK_FAILED, HostOutcome.UNKNOWN)
                   for h in self.hosts)

    def to_json(self) -> dict[str, Any]:
        return {"type": "fleet", "command": self.command, "ref": self.ref,
                "release": self.release, "outcome": self.outcome, "reason": self.reason,
                "mixed": self.mixed, "hosts": [h.to_json() for h in self.hosts]}


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
    if report.outcome == "unchanged":
        lines.append(f"{report.release} is live on every host already: nothing to do")
    elif not report.failed and report.command == "deploy":
        lines.append(f"deployed {report.ref} as {report.release} on {switched} host(s)")
    elif not report.failed:
        lines.append(f"rolled back to {report.release} on {switched} host(s)")
    elif report.mixed:
        lines.append("the fleet is MIXED: some hosts could not be switched back; run "
                     f"`relman fleet status`, then `relman fleet {report.command}` again")
    return "\n".join(lines)

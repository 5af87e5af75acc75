"""The end of a fleet deploy or rollback: the table (host, release, prepare time, switch
time, result) and one line saying where the fleet is, or its JSON."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from relman.fleet.plan import HostOutcome, HostRecord

__all__ = ["FleetReport", "make_report", "render_report"]


@dataclass(frozen=True, slots=True)
class FleetReport:
    """`relman fleet deploy|rollback`, as it ended (the hosts' rows copied)."""

    command: str  # deploy | rollback
    ref: str  # what was asked: the ref, or the rollback's release
    release: str  # the release id ("" when no host got as far)
    outcome: str  # deployed | rolled-back | unchanged | failed
    reason: str  # why it failed, one line ("" if it did not)
    mixed: bool  # some hosts are on the new release and some not
    hosts: tuple[dict[str, Any], ...]  # HostRecord.to_json() of each host

    @property
    def failed(self) -> bool:
        return self.outcome == "failed"

    def to_json(self) -> dict[str, Any]:
        return {"type": "fleet", "command": self.command, "ref": self.ref,
                "release": self.release, "outcome": self.outcome, "reason": self.reason,
                "mixed": self.mixed, "hosts": list(self.hosts)}


def make_report(command: str, asked: str, release: str, outcome: str, reason: str,
                mixed: bool, records: list[HostRecord]) -> FleetReport:
    return FleetReport(command, asked, release, outcome, reason, mixed,
                       tuple(r.to_json() for r in records))


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}s"


def render_report(report: FleetReport) -> str:
    """The final table, then one line saying where the fleet is now."""
    rows = [("HOST", "RELEASE", "PREPARE", "SWITCH", "RESULT")]
    for h in report.hosts:
        result = f"{h['result']}: {h['detail']}" if h["detail"] else h["result"]
        rows.append((h["host"], h["release"] or "-", _seconds(h["prepare_s"]),
                     _seconds(h["switch_s"]), result))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=True)) + "  " + r[4]
             for r in rows]
    switched = sum(h["result"] == HostOutcome.SWITCHED for h in report.hosts)
    left_out = sum(h["result"] == HostOutcome.UNREACHABLE for h in report.hosts)
    out = f" ({left_out} unreachable host(s) left out)" if left_out else ""
    if report.mixed:
        lines.append("the fleet is MIXED: some hosts are on the new release and some not; "
                     f"run `relman fleet status`, then `relman fleet {report.command}` again")
    elif report.outcome == "unchanged":
        lines.append(f"{report.release} is live on every host reached already: nothing to "
                     f"do{out}")
    elif report.outcome == "deployed":
        lines.append(f"deployed {report.ref} as {report.release} on {switched} host(s){out}")
    elif report.outcome == "rolled-back":
        lines.append(f"rolled back to {report.release} on {switched} host(s){out}")
    return "\n".join(lines)

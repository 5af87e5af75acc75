"""`relman fleet status` and `relman fleet releases`: every host asked at once (its own
`relman status` / `relman releases`), the answers merged into one table. Mixed live
releases are flagged: a fleet left mixed is what `relman fleet deploy` again converges."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from relman.config_fleet import FleetConfig
from relman.fleet.remote import Answer, quiet, run_on, text

__all__ = ["FleetStatus", "fleet_releases", "fleet_status", "merge_releases",
           "render_releases", "render_status", "status_rows"]

FleetStatus = dict[str, Any]


async def _ask(fleet: FleetConfig, *args: str) -> list[Answer]:
    limit = asyncio.Semaphore(fleet.parallel)
    return list(await asyncio.gather(*(run_on(fleet, h, args, quiet, limit=limit)
                                       for h in fleet.hosts)))


def fleet_status(fleet: FleetConfig) -> FleetStatus:
    return status_rows(asyncio.run(_ask(fleet, "status")))


def status_rows(answers: Sequence[Answer]) -> FleetStatus:
    """One row per host from its `relman status --json`, the live releases and whether they
    are mixed, and the problems (a host not answering, not serving, unhealthy)."""
    rows: list[dict[str, Any]] = []
    live: dict[str, list[str]] = {}
    problems: list[str] = []
    for a in answers:
        s = a.result if a.ok and isinstance(a.result, dict) else None
        if s is None:
            rows.append({"host": a.host, "reachable": not a.unreachable, "live": None,
                         "healthy": False, "daemon": None, "prepared": None, "job": None,
                         "error": a.reason})
            problems.append(f"{a.host}: {'unreachable: ' if a.unreachable else ''}{a.reason}")
            continue
        health, job = _dict(s.get("health")), _dict(s.get("job"))
        row = {"host": a.host, "reachable": True, "live": text(s.get("live")),
               "healthy": health.get("healthy") is True,
               "health": text(health.get("detail")) or "",
               "daemon": text(_dict(s.get("daemon")).get("version")) or "?",
               "prepared": text(s.get("prepared")), "job": text(job.get("job")),
               "crash_loop": text(s.get("crash_loop")), "error": ""}
        rows.append(row)
        live.setdefault(str(row["live"] or "none"), []).append(a.host)
        if not row["live"]:
            problems.append(f"{a.host}: nothing live")
        elif not row["healthy"]:
            problems.append(f"{a.host}: unhealthy ({row['health']})")
    mixed = len(live) > 1
    if mixed:
        problems.insert(0, "MIXED: " + "; ".join(f"{r} on {', '.join(h)}"
                                                  for r, h in live.items()))
    return {"hosts": rows, "live": live, "mixed": mixed, "problems": problems}


def render_status(status: FleetStatus) -> str:
    table = [("HOST", "LIVE", "HEALTH", "DAEMON", "NOTE")]
    for r in status["hosts"]:
        if r["error"]:
            table.append((r["host"], "-", "-", "-",
                          ("UNREACHABLE: " if not r["reachable"] else "") + r["error"]))
            continue
        notes = [f"prepared {r['prepared']}" if r["prepared"] else "",
                 f"job {r['job']} running" if r["job"] else "",
                 f"crash loop: {r['crash_loop']}" if r["crash_loop"] else ""]
        health = ("-" if not r["live"] else "healthy" if r["healthy"]
                  else f"UNHEALTHY {r['health']}".strip())
        table.append((r["host"], r["live"] or "-", health,
                      f"relman {r['daemon']}", "; ".join(n for n in notes if n)))
    lines = _columns(table)
    live = status["live"]
    if status["mixed"]:
        lines.append(status["problems"][0])
    elif live and not status["problems"]:
        (release,) = live
        lines.append(f"all {len(status['hosts'])} hosts live on {release}")
    return "\n".join(lines)


def fleet_releases(fleet: FleetConfig) -> dict[str, Any]:
    answers = asyncio.run(_ask(fleet, "releases"))
    return merge_releases(fleet.hosts, {a.host: a for a in answers})


def merge_releases(hosts: Sequence[str], answers: Mapping[str, Answer]) -> dict[str, Any]:
    """Every release any host has, oldest first, with each host's mark: live, target
    (its rollback target), its state (built, failed, ...), or "-" where it has none."""
    marks: dict[str, dict[str, str]] = {}
    refs: dict[str, str] = {}
    errors: dict[str, str] = {}
    for host in hosts:
        a = answers[host]
        if not a.ok or not isinstance(a.result, list):
            errors[host] = a.reason
            continue
        for row in map(_dict, a.result):
            release = str(row.get("id", ""))
            if not release:
                continue
            refs.setdefault(release, str(row.get("ref", "")))
            mark = ("live" if row.get("live") else "target" if row.get("rollback_target")
                    else str(row.get("state", "?")))
            marks.setdefault(release, {})[host] = mark
    releases = [{"release": r, "ref": refs[r],
                 "hosts": {h: marks[r].get(h, "-") for h in hosts if h not in errors}}
                for r in sorted(marks)]
    return {"releases": releases, "errors": errors}


def render_releases(data: Mapping[str, Any], hosts: Sequence[str]) -> str:
    shown = [h for h in hosts if h not in data["errors"]]
    table = [("RELEASE", "REF", *shown)]
    table += [(r["release"], r["ref"], *(r["hosts"][h] for h in shown))
              for r in data["releases"]]
    lines = _columns(table)
    lines += [f"{h}: {reason}" for h, reason in data["errors"].items()]
    return "\n".join(lines)


def _columns(table: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
            for row in table]


def _dict(value: object) -> dict[str, Any]:
    """*value* if it is a JSON object, else {} (a host's odd answer is no crash here)."""
    return value if isinstance(value, dict) else {}

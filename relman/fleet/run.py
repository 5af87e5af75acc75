"""FleetRun: `relman fleet deploy REF` and `relman fleet rollback [RELEASE]` (DESIGN
section 9), two phases over every host's own swap protocol.

1. Prepare. Every host's `relman status` first (its live release, to switch back to; an
   unreachable host is known before anything starts). Deploy: the release host runs
   `deploy REF --prepare` (fetch, build, release phase, candidate); the others build at the
   same time (`deploy REF --build-only`) and prepare their candidate with
   `--no-release-phase` once the release host's release phase is done, so no candidate
   starts against a schema its release phase has not migrated yet. Rollback: every host
   `rollback RELEASE --prepare` at once (a warm release is taken over, not started).
   Any failure, or an unreachable host without --allow-unreachable: every prepared
   candidate is aborted, and no host has switched.
2. Switch, in waves (plan.switch_waves): the canary hosts, watched canary_seconds through
   `relman status`, then the rest together or `batch` at a time, each `relman switch ID
   --keep-warm S` so that its old release stays warm. A host whose switch fails has kept
   its live release; the coordinator rolls the hosts that switched back to the release
   they ran (warm) and aborts the candidates not yet switched.

A host where the release is live already is left alone (unchanged), and a candidate a
killed coordinator left prepared is taken as prepared (`deploy --prepare` of it answers
it): running the same command again converges a fleet left mixed. SIGINT, SIGTERM or
SIGHUP stop it in order: commands under way finish, then candidates are aborted and
switched hosts switched back. The decisions are plan.py's; this module only asks.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

from relman.config_fleet import FleetConfig
from relman.fleet import plan
from relman.fleet.connections import Connections
from relman.fleet.plan import HostOutcome, HostRecord, in_state
from relman.fleet.remote import Answer, Echo, quiet, text
from relman.fleet.report import FleetReport, make_report
from relman.fleet.session import Sessions

__all__ = ["FleetRun"]

#: seconds between two looks at the canary hosts, and the longest one look may take
CANARY_POLL: Final = 2.0
STATUS_TIMEOUT: Final = 30.0


class FleetRun:
    def __init__(self, fleet: FleetConfig, echo: Echo, *, allow_unreachable: bool = False,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.fleet, self.echo, self.clock = fleet, echo, clock
        self.allow_unreachable = allow_unreachable
        self.records = {h: HostRecord(h) for h in fleet.hosts}
        self.limit = asyncio.Semaphore(fleet.parallel)
        self.stopping = asyncio.Event()
        self.release = ""
        self.release_host: str | None = None  # a deploy's, once chosen
        self.statuses: dict[str, dict[str, Any]] = {}  # each host's status at the start
        self.connections = Connections(fleet)
        self.sessions = Sessions(fleet, self.connections, self.limit)

    def stop(self) -> None:
        """SIGINT/SIGTERM/SIGHUP: finish what runs, then put the fleet back as it was."""
        if not self.stopping.is_set():
            self.echo("", "stop", "stopping: commands under way finish, then candidates are "
                      "aborted and switched hosts switched back")
        self.stopping.set()

    async def ask(self, host: str, *args: str, echo: Echo | None = None) -> Answer:
        """`relman --json ARGS` on *host* (a line on its session), at most fleet.parallel
        at once."""
        return await self.sessions.ask(host, args, echo or self.echo)

    def hosts_in(self, *outcomes: HostOutcome) -> list[HostRecord]:
        return in_state(self.records.values(), *outcomes)

    # -- the two commands -------------------------------------------------------------

    async def deploy(self, ref: str) -> FleetReport:
        return await self._guarded("deploy", ref, lambda: self._prepare_deploy(ref))

    async def rollback(self, release: str | None) -> FleetReport:
        return await self._guarded("rollback", release or "",
                                   lambda: self._prepare_rollback(release))

    async def _guarded(self, command: str, asked: str,
                       prepare: Callable[[], Awaitable[None]]) -> FleetReport:
        """Preflight, *prepare*, switch; whatever goes wrong in between (a bug included),
        candidates are aborted and switched hosts switched back before it is raised."""
        try:
            if await self._preflight():
                await prepare()
            why = await self._finish()
        except BaseException:
            with contextlib.suppress(Exception):
                await self._recover("the coordinator failed: putting the fleet back")
            raise
        finally:
            await self.sessions.close()
            await self.connections.close()
        return self._report(command, asked or self.release, why)

    # -- phase 1 ----------------------------------------------------------------------

    async def _preflight(self) -> bool:
        """Every host's status; False when the run must stop before preparing anything."""
        answers = await asyncio.gather(*(self.ask(h, "status", echo=quiet)
                                         for h in self.records))
        for answer in answers:
            record = self.records[answer.host]
            status = answer.result if answer.ok and isinstance(answer.result, dict) else None
            if answer.unreachable:
                record.move(HostOutcome.UNREACHABLE, answer.reason)
            elif status is None:
                record.move(HostOutcome.PREPARE_FAILED, f"status: {answer.reason}")
            else:
                self.statuses[answer.host] = status
                # `live` is None while the live server is down (a crash restart's backoff)
                record.previous = text(status.get("live")) or text(status.get("current"))
                continue
            self.echo(answer.host, "status", answer.reason)
        if self.stopping.is_set() or self.hosts_in(HostOutcome.PREPARE_FAILED):
            return False
        return self.allow_unreachable or not self.hosts_in(HostOutcome.UNREACHABLE)

    async def _prepare_deploy(self, ref: str) -> None:
        pending = self.hosts_in(HostOutcome.NOT_STARTED)
        self.release_host = chosen = plan.release_host(self.fleet, [r.host for r in pending])
        if chosen is None:
            self.release_host = plan.wanted_release_host(self.fleet)
            for record in pending:
                record.move(HostOutcome.ABORTED,
                            f"not started: the release host {self.release_host} is unreachable")
            return
        gate = asyncio.Event()
        first = self.records[chosen]

        def release_echo(host: str, step: str, message: str) -> None:
            self.echo(host, step, message)
            if step == "released":
                gate.set()

        async def release_host() -> None:
            self.echo(chosen, "prepare", "release host: runs release.commands")
            try:
                await self._prepare(first, ["deploy", ref, "--prepare"], echo=release_echo)
            finally:
                gate.set()

        others = [r for r in pending if r is not first]
        await asyncio.gather(release_host(), *(self._prepare_other(r, ref, gate, first)
                                               for r in others))

    async def _prepare_other(self, record: HostRecord, ref: str, gate: asyncio.Event,
                             first: HostRecord) -> None:
        built = await self.ask(record.host, "deploy", ref, "--build-only")
        if not built.ok:
            self._prepare_failed(record, built, "build")
            return
        await gate.wait()
        if self.stopping.is_set():
            record.move(HostOutcome.ABORTED, "built, not prepared: stopped")
        elif first.outcome not in (HostOutcome.NOT_STARTED, HostOutcome.PREPARED,
                                   HostOutcome.UNCHANGED):
            record.move(HostOutcome.ABORTED, "built, not prepared: the release host failed")
        else:
            await self._prepare(record, ["deploy", ref, "--prepare", "--no-release-phase"],
                                spent=built.seconds)

    async def _prepare_rollback(self, release: str | None) -> None:
        statuses = self.statuses
        target = release or plan.agreed_rollback_target(
            {h: text(s.get("rollback_target")) for h, s in statuses.items()},
            {h: text(s.get("live")) for h, s in statuses.items()})
        self.release = target
        self.echo("", "prepare", f"rolling back to {target}")
        await asyncio.gather(*(self._prepare(r, ["rollback", target, "--prepare"])
                               for r in self.hosts_in(HostOutcome.NOT_STARTED)))

    async def _prepare(self, record: HostRecord, args: list[str], *, echo: Echo | None = None,
                       spent: float = 0.0) -> None:
        if self.stopping.is_set():
            record.move(HostOutcome.ABORTED, "not prepared: stopped")
            return
        answer = await self.ask(record.host, *args, echo=echo)
        received = self.clock()
        record.prepare_s = round(spent + answer.seconds, 1)
        result = answer.result if answer.ok and isinstance(answer.result, dict) else None
        if result is None or not isinstance(result.get("release"), str):
            self._prepare_failed(record, answer, args[0])
            return
        record.release = result["release"]
        if result.get("live") is True:
            record.move(HostOutcome.UNCHANGED, "live already")
            return
        left, until = result.get("expires_in"), result.get("prepared_until")
        if not isinstance(left, (int, float)) or left <= 0:
            # a daemon older than expires_in (absent, or 0 from a newer CLI over it): its
            # epoch deadline, against this machine's clock
            left = until - time.time() if isinstance(until, (int, float)) else 0.0
        record.expires_at = received + left
        record.move(HostOutcome.PREPARED)

    def _prepare_failed(self, record: HostRecord, answer: Answer, what: str) -> None:
        if answer.unreachable:
            record.move(HostOutcome.UNREACHABLE, answer.reason)
        else:
            record.move(HostOutcome.PREPARE_FAILED, f"{what}: {answer.reason}")
        self.echo(record.host, "failed", record.detail)

    # -- phase 2 ----------------------------------------------------------------------

    async def _finish(self) -> str:
        """Switch when every host is ready, else put the fleet back; why it failed."""
        ready = [r.host for r in self.hosts_in(HostOutcome.PREPARED)]
        waves = plan.switch_waves(ready, self.fleet)
        releases = {r.release for r in self.hosts_in(HostOutcome.PREPARED,
                                                     HostOutcome.UNCHANGED)}
        why = plan.why_not_switch(
            list(self.records.values()), release_host=self.release_host,
            allow_unreachable=self.allow_unreachable, stopping=self.stopping.is_set(),
            must_last=plan.candidates_must_last(self.fleet, len(waves)), now=self.clock())
        if len(releases) == 1:
            self.release = releases.pop()
        if not why and waves:
            why = await self._switch(waves)
        if why:
            await self._recover(why)
        return why

    async def _switch(self, waves: list[tuple[str, ...]]) -> str:
        """Switch wave by wave; why it stopped ("" when every host switched)."""
        keep = plan.keep_warm_seconds(self.fleet, len(waves))
        for number, wave in enumerate(waves):
            if self.stopping.is_set():
                return "stopped during the switch"
            if len(waves) > 1:
                self.echo("", "switch", f"wave {number + 1} of {len(waves)}: {', '.join(wave)}")
            await asyncio.gather(*(self._switch_one(self.records[h], keep) for h in wave))
            bad = [self.records[h] for h in wave
                   if self.records[h].outcome is not HostOutcome.SWITCHED]
            if bad:
                return f"switch failed on {plan.names(bad)}"
            if number == 0 and self.fleet.canary and len(waves) > 1:
                trouble = await self._watch(wave)
                if trouble:
                    return trouble
        return ""

    async def _switch_one(self, record: HostRecord, keep: float) -> None:
        answer = await self.ask(record.host, "switch", self.release, "--keep-warm", f"{keep:g}",
                                "--wait")
        record.switch_s = round(answer.seconds, 2)
        if isinstance(answer.result, dict):  # its answer: switched, whatever ssh exited
            record.move(HostOutcome.SWITCHED)
        elif answer.error is not None:
            record.move(HostOutcome.SWITCH_FAILED, f"{answer.reason} (its live release "
                        "serves on)")
        else:  # the answer was lost: the host says where it is
            status = await self._status(record.host)
            live = status.get("live") if status else None
            if live == self.release:
                record.move(HostOutcome.SWITCHED, f"its answer was lost ({answer.reason})")
            elif live is not None and live == record.previous:
                record.move(HostOutcome.SWITCH_FAILED, answer.reason)
            else:
                record.move(HostOutcome.UNKNOWN, answer.reason)

    async def _status(self, host: str) -> dict[str, Any] | None:
        """*host*'s `relman status`, or None (no answer within STATUS_TIMEOUT)."""
        try:
            answer = await asyncio.wait_for(self.ask(host, "status", echo=quiet),
                                            STATUS_TIMEOUT)
        except TimeoutError:
            return None
        return answer.result if answer.ok and isinstance(answer.result, dict) else None

    async def _watch(self, hosts: tuple[str, ...]) -> str:
        """Look at the canary hosts for canary_seconds; why one is sick ("" if none is)."""
        self.echo("", "canary", f"watching {', '.join(hosts)} for "
                  f"{self.fleet.canary_seconds:g}s")
        baseline: dict[str, int] = {}
        end = self.clock() + self.fleet.canary_seconds
        while True:
            statuses = await asyncio.gather(*(self._status(h) for h in hosts))
            for host, status in zip(hosts, statuses, strict=True):
                if status is not None:
                    baseline.setdefault(host, plan.web_restarts(status))
                trouble = plan.canary_trouble(self.release, status, baseline.get(host, 0))
                if trouble:
                    self.echo(host, "canary", trouble)
                    return f"canary {host} is sick: {trouble}"
            left = end - self.clock()
            if left <= 0:
                self.echo("", "canary", "the canary hosts stayed healthy")
                return ""
            if self.stopping.is_set():
                return "stopped while watching the canary"
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), min(CANARY_POLL, left))

    async def _recover(self, why: str) -> None:
        """Put the fleet back: switched hosts to their previous release, candidates aborted
        (those of hosts whose switch was refused or lost too: no harm if there is none)."""
        self.echo("", "recover", why)
        await asyncio.gather(
            *(self._switch_back(r) for r in self.hosts_in(HostOutcome.SWITCHED)),
            *(self._abort(r) for r in self.hosts_in(HostOutcome.PREPARED)),
            *(self.ask(r.host, "abort", r.release, "--wait", echo=quiet)
              for r in self.hosts_in(HostOutcome.SWITCH_FAILED, HostOutcome.UNKNOWN)
              if r.release))

    async def _switch_back(self, record: HostRecord) -> None:
        if not record.previous:
            record.move(HostOutcome.BACK_FAILED, "nothing was live there before")
            return
        answer = await self.ask(record.host, "rollback", record.previous, "--wait")
        status = None if answer.ok else await self._status(record.host)
        # A sick canary's daemon may have rolled back by itself (its crash-loop rule).
        if answer.ok or (status is not None and status.get("live") == record.previous):
            record.move(HostOutcome.SWITCHED_BACK, f"back on {record.previous}")
        else:
            record.move(HostOutcome.BACK_FAILED, f"rollback {record.previous}: {answer.reason}")

    async def _abort(self, record: HostRecord) -> None:
        answer = await self.ask(record.host, "abort", record.release, "--wait")
        record.move(HostOutcome.ABORTED, "" if answer.ok else f"abort: {answer.reason}")

    def _report(self, command: str, asked: str, why: str) -> FleetReport:
        records = list(self.records.values())
        for record in records:
            record.ssh_sessions = self.sessions.opened(record.host)
        return make_report(command, asked, self.release, plan.outcome_of(command, records, why),
                           why, plan.left_mixed(records, bool(why)), records)


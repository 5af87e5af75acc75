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
   --keep-warm S` so that its old release stays warm. A host whose switch fails has
   switched itself back; the coordinator rolls the hosts that switched back to the
   release they ran (warm) and aborts the candidates not yet switched.

A host where the release is live already is left alone (unchanged), and a candidate a
killed coordinator left prepared is taken as prepared (`deploy --prepare` of it answers
it): running the same command again converges a fleet left mixed. SIGINT or SIGTERM stop
it in order: commands under way finish, then candidates are aborted and switched hosts
switched back."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable
from typing import Any, Final

from relman.config_fleet import FleetConfig
from relman.fleet import plan
from relman.fleet.plan import HostOutcome
from relman.fleet.remote import Answer, Echo, run_on
from relman.fleet.report import FleetReport, HostRecord

__all__ = ["FleetRun"]


#: a candidate must outlive the canary watch by this much, or the switch does not start
EXPIRY_MARGIN: Final = 30.0
#: seconds between two looks at the canary hosts
CANARY_POLL: Final = 2.0


class FleetRun:
    def __init__(self, fleet: FleetConfig, echo: Echo, *, allow_unreachable: bool = False,
                 clock: Callable[[], float] = time.time) -> None:
        self.fleet, self.echo, self.clock = fleet, echo, clock
        self.allow_unreachable = allow_unreachable
        self.records = {h: HostRecord(h) for h in fleet.hosts}
        self.limit = asyncio.Semaphore(fleet.parallel)
        self.stopping = asyncio.Event()
        self.release = ""

    def stop(self) -> None:
        """SIGINT/SIGTERM: finish what runs, then put the fleet back as it was."""
        if not self.stopping.is_set():
            self.echo("", "stop", "stopping: commands under way finish, then candidates are "
                      "aborted and switched hosts switched back")
        self.stopping.set()

    async def run(self, host: str, *args: str, echo: Echo | None = None) -> Answer:
        return await run_on(self.fleet, host, args, echo or self.echo, limit=self.limit)

    def _with(self, *outcomes: HostOutcome) -> list[HostRecord]:
        return [r for r in self.records.values() if r.outcome in outcomes]

    # -- the two commands -------------------------------------------------------------

    async def deploy(self, ref: str) -> FleetReport:
        statuses = await self._preflight()
        if statuses is not None:
            await self._prepare_deploy(ref)
        return await self._finish("deploy", ref)

    async def rollback(self, release: str | None) -> FleetReport:
        statuses = await self._preflight()
        if statuses is not None:
            target = release or plan.agreed_rollback_target(
                {h: s.get("rollback_target") for h, s in statuses.items()},
                {h: s.get("live") for h, s in statuses.items()})
            self.release = target
            self.echo("", "prepare", f"rolling back to {target}")
            await asyncio.gather(*(self._prepare(r, ["rollback", target, "--prepare"])
                                   for r in self._with(HostOutcome.PENDING)))
        return await self._finish("rollback", release or self.release)

    # -- phase 1 ----------------------------------------------------------------------

    async def _preflight(self) -> dict[str, dict[str, Any]] | None:
        """Every host's status; None when the run must stop before preparing anything."""
        answers = await asyncio.gather(*(self.run(h, "status", echo=_quiet)
                                         for h in self.records))
        statuses: dict[str, dict[str, Any]] = {}
        for answer in answers:
            record = self.records[answer.host]
            if answer.unreachable:
                record.move(HostOutcome.UNREACHABLE, answer.reason)
                self.echo(answer.host, "status", answer.reason)
            elif not answer.ok or not isinstance(answer.result, dict):
                record.move(HostOutcome.PREPARE_FAILED, f"status: {answer.reason}")
                self.echo(answer.host, "status", answer.reason)
            else:
                statuses[answer.host] = answer.result
                record.previous = answer.result.get("live")
        return statuses if self._may_go_on() else None

    def _may_go_on(self) -> bool:
        if self.stopping.is_set() or self._with(HostOutcome.PREPARE_FAILED):
            return False
        return self.allow_unreachable or not self._with(HostOutcome.UNREACHABLE)

    async def _prepare_deploy(self, ref: str) -> None:
        pending = self._with(HostOutcome.PENDING)
        chosen = plan.release_host(self.fleet, [r.host for r in pending])
        if chosen is None:
            wanted = self.fleet.release_host or self.fleet.hosts[0]
            for record in pending:
                record.move(HostOutcome.PREPARE_FAILED,
                            f"not started: the release host {wanted} is unreachable")
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
        built = await self.run(record.host, "deploy", ref, "--build-only")
        if not built.ok:
            self._prepare_failed(record, built, "build")
            return
        await gate.wait()
        if self.stopping.is_set():
            record.move(HostOutcome.ABORTED, "built, not prepared: stopped")
            return
        if first.outcome not in (HostOutcome.PENDING, HostOutcome.PREPARED,
                                 HostOutcome.UNCHANGED):
            record.move(HostOutcome.ABORTED, "built, not prepared: the release host failed")
            return
        await self._prepare(record, ["deploy", ref, "--prepare", "--no-release-phase"],
                            spent=built.seconds)

    async def _prepare(self, record: HostRecord, args: list[str], *, echo: Echo | None = None,
                       spent: float = 0.0) -> None:
        if self.stopping.is_set():
            record.move(HostOutcome.ABORTED, "not prepared: stopped")
            return
        answer = await self.run(record.host, *args, echo=echo)
        record.prepare_s = round(spent + answer.seconds, 1)
        if not answer.ok or not isinstance(answer.result, dict):
            self._prepare_failed(record, answer, args[0])
            return
        result = answer.result
        record.release = str(result.get("release", ""))
        if result.get("live"):
            record.move(HostOutcome.UNCHANGED, "live already")
        else:
            record.prepared_until = float(result.get("prepared_until") or 0.0)
            record.move(HostOutcome.PREPARED)

    def _prepare_failed(self, record: HostRecord, answer: Answer, what: str) -> None:
        if answer.unreachable:
            record.move(HostOutcome.UNREACHABLE, answer.reason)
        else:
            record.move(HostOutcome.PREPARE_FAILED, f"{what}: {answer.reason}")
        self.echo(record.host, "failed", record.detail)

    # -- phase 2 ----------------------------------------------------------------------

    async def _finish(self, command: str, asked: str) -> FleetReport:
        """Switch when every host is ready; else abort every candidate."""
        why = self._why_not_switch()
        if why:
            await self._recover(why)
            return self._report(command, asked, why)
        ready = [r.host for r in self._with(HostOutcome.PREPARED)]
        if not ready:
            return self._report(command, asked, "")
        why = await self._switch(ready)
        if why:
            await self._recover(why)
        return self._report(command, asked, why)

    def _why_not_switch(self) -> str:
        """Why the switch must not start ("" if it may)."""
        failed = self._with(HostOutcome.PREPARE_FAILED)
        unreachable = self._with(HostOutcome.UNREACHABLE)
        if failed:
            return "prepare failed on " + _hosts(failed) + ": nobody switched"
        if unreachable and not self.allow_unreachable:
            return (f"unreachable: {_hosts(unreachable)}: nobody switched "
                    "(--allow-unreachable deploys to the others)")
        if self.stopping.is_set():
            return "stopped: nobody switched"
        ready = self._with(HostOutcome.PREPARED, HostOutcome.UNCHANGED)
        releases = {r.release for r in ready}
        if len(releases) > 1:
            said = ", ".join(f"{r.host} {r.release}" for r in ready)
            return (f"the hosts prepared different releases ({said}): did the ref move while "
                    "they fetched? Deploy a tag or a sha")
        self.release = releases.pop() if releases else self.release
        if not ready:
            return "no host to switch"
        prepared = self._with(HostOutcome.PREPARED)
        watch = self.fleet.canary_seconds if self.fleet.canary else 0.0
        soon = [r for r in prepared if r.prepared_until < self.clock() + watch + EXPIRY_MARGIN]
        if soon:
            return (f"the candidates on {_hosts(soon)} expire before the switch could end; "
                    "raise swap.prepare_timeout on the hosts or lower fleet.canary_seconds")
        return ""

    async def _switch(self, hosts: list[str]) -> str:
        """Switch *hosts* wave by wave; why it stopped ("" when every host switched)."""
        waves = plan.switch_waves(hosts, self.fleet)
        keep = plan.keep_warm_seconds(self.fleet, len(waves))
        for number, wave in enumerate(waves):
            if self.stopping.is_set():
                return "stopped during the switch"
            if len(waves) > 1:
                self.echo("", "switch", f"wave {number + 1} of {len(waves)}: {', '.join(wave)}")
            answers = await asyncio.gather(*(self.run(h, "switch", self.release,
                                                      "--keep-warm", f"{keep:g}")
                                             for h in wave))
            for answer in answers:
                record = self.records[answer.host]
                record.switch_s = round(answer.seconds, 2)
                if answer.ok:
                    record.move(HostOutcome.SWITCHED)
                elif answer.unreachable:
                    record.move(HostOutcome.UNKNOWN, answer.reason)
                else:
                    record.move(HostOutcome.SWITCH_FAILED,
                                f"{answer.reason} (its live release serves on)")
            bad = [self.records[a.host] for a in answers if not a.ok]
            if bad:
                return "switch failed on " + _hosts(bad)
            if number == 0 and self.fleet.canary and len(waves) > 1:
                trouble = await self._watch(wave)
                if trouble:
                    return trouble
        return ""

    async def _watch(self, canaries: Iterable[str]) -> str:
        """Look at the canary hosts for canary_seconds; why one is sick ("" if none is)."""
        hosts = list(canaries)
        self.echo("", "canary", f"watching {', '.join(hosts)} for "
                  f"{self.fleet.canary_seconds:g}s")
        baseline: dict[str, int] = {}
        end = time.monotonic() + self.fleet.canary_seconds
        while True:
            answers = await asyncio.gather(*(self.run(h, "status", echo=_quiet) for h in hosts))
            for answer in answers:
                status = answer.result if answer.ok and isinstance(answer.result, dict) else None
                if status is not None:
                    baseline.setdefault(answer.host, plan.web_restarts(status))
                trouble = plan.canary_trouble(self.release, status,
                                              baseline.get(answer.host, 0))
                if trouble:
                    self.echo(answer.host, "canary", trouble)
                    return f"canary {answer.host} is sick: {trouble}"
            left = end - time.monotonic()
            if left <= 0:
                self.echo("", "canary", "the canary hosts stayed healthy")
                return ""
            if self.stopping.is_set():
                return "stopped while watching the canary"
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), min(CANARY_POLL, left))

    async def _recover(self, why: str) -> None:
        """Put the fleet back: switched hosts to their previous release, candidates aborted."""
        self.echo("", "recover", why)
        await asyncio.gather(*(self._switch_back(r) for r in self._with(HostOutcome.SWITCHED)),
                             *(self._abort(r) for r in self._with(HostOutcome.PREPARED)))

    async def _switch_back(self, record: HostRecord) -> None:
        if not record.previous:
            record.move(HostOutcome.BACK_FAILED, "nothing was live there before")
            return
        answer = await self.run(record.host, "rollback", record.previous)
        if answer.ok:
            record.move(HostOutcome.SWITCHED_BACK, f"back on {record.previous}")
            return
        # A sick canary's daemon may have rolled back by itself (its crash-loop rule).
        status = await self.run(record.host, "status", echo=_quiet)
        if status.ok and isinstance(status.result, dict) \
                and status.result.get("live") == record.previous:
            record.move(HostOutcome.SWITCHED_BACK, f"back on {record.previous}")
        else:
            record.move(HostOutcome.BACK_FAILED, f"rollback {record.previous}: {answer.reason}")

    async def _abort(self, record: HostRecord) -> None:
        answer = await self.run(record.host, "abort", record.release)
        detail = "" if answer.ok else f"abort: {answer.reason} (it expires by itself)"
        record.move(HostOutcome.ABORTED, detail)

    def _report(self, command: str, asked: str, why: str) -> FleetReport:
        switched = self._with(HostOutcome.SWITCHED)
        if why:
            outcome = "failed"
        elif not switched:
            outcome = "unchanged"
        else:
            outcome = "deployed" if command == "deploy" else "rolled-back"
        report = FleetReport(command, asked, self.release, outcome, why,
                             tuple(self.records.values()))
        return report


def _hosts(records: Iterable[HostRecord]) -> str:
    return ", ".join(r.host for r in records)


def _quiet(_host: str, _step: str, _message: str) -> None:
    pass

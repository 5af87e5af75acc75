"""App: deploy, rollback and restart as journaled transactions over the release store and
the supervisor."""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import structlog

from relman.atomic import read_link, replace_symlink
from relman.config import Config
from relman.errors import NoRollbackTarget, RelmanError, Unhealthy, writing
from relman.journal import Journal, JournalEntry, Step
from relman.releases import Manifest, ReleaseState, ReleaseStore
from relman.supervisor import ServerHandle, ServerSpec, ServerState, Supervisor, Tracker
from relman.supervisor.drain import wait_drained
from relman.transaction import faults
from relman.transaction.links import Links
from relman.transaction.record import Clock, RunRecord
from relman.transaction.routes import check_live, check_preview
from relman.transaction.runstate import (
    Gone,
    RunState,
    Started,
    SwitchedBack,
    SwitchedTo,
)
from relman.transaction.specs import server_spec
from relman.transaction.warm import WarmKeeper

log = structlog.get_logger(__name__)

Report = Callable[[str, str], None]  # (step, message)

# In the environment of every process a job runs; see recovery.kill_job_processes().
JOB_ENV = "RELMAN_JOB"


def _quiet(_step: str, _message: str) -> None:
    return None


class App:
    """One app: its release store, its app servers and the job in progress."""

    def __init__(self, config: Config, *, clock: Clock = time.time) -> None:
        self.config = config
        self.store = ReleaseStore(config)
        self.root = self.store.root
        self.supervisor = Supervisor(self.root.run, self.root.log,
                                     Tracker.for_app(config.app.name, self.root.root),
                                     on_crash=self._on_crash)
        self.journal = Journal(self.root.journal)
        # What runs, which release is live and linked, the last switch and the warm window:
        # one record, changed by events only (runstate.py); the links follow it.
        self.record = RunRecord(self.root.run_record, legacy=self.root.switch_record,
                                run_dir=self.root.run, clock=clock)
        self.clock = clock
        self.warm = WarmKeeper(self.record, self.supervisor.handles, self.stop_server)
        self.on_live_crash: Callable[[ServerHandle], Awaitable[None]] | None = None
        self.job_started = 0.0
        self.switch_ms = 0.0  # daemon work from the job's start to its switch, last swap

    def reload(self, config: Config) -> None:
        """Run with *config* from now on (SIGHUP, a changed file)."""
        self.config = self.store.config = config

    @property
    def live(self) -> ServerHandle | None:
        """The live instance's server, if it runs."""
        live = self.record.state.live
        return self.supervisor.handles.get(live.name) if live is not None else None

    @property
    def linked(self) -> str | None:
        """The release relman itself last pointed `current` at: any other target is an
        external flip, whether or not the live server is running right now."""
        return self.record.state.linked or None

    def _step(self, step: Step, report: Report, message: str, **changes: str) -> None:
        entry = self.journal.step(step, **changes)
        log.info("deploy.step_done", step=str(step), release=entry.release)
        report(str(step), message)
        faults.after_step(entry.job, str(step), self.journal.path)  # tests only

    def server_spec(self, manifest: Manifest) -> ServerSpec:
        """The spec of a new instance of *manifest*'s server, at its resolved path."""
        return server_spec(self.config, self.root, manifest, self.store.app_env(),
                           self.supervisor.next_instance(manifest.id))

    async def deploy(self, ref: str, who: str, report: Report = _quiet) -> Manifest:
        """Fetch *ref*, build it, run the release phase and swap it in."""
        started = time.monotonic()
        self._begin(JournalEntry(job="deploy", ref=ref, who=who))
        try:
            self.store.probe_interpreter()
            await self.store.fetch(lambda line: report("fetch", line))
            commit = await self.store.resolve(ref)
            self._step(Step.FETCHED, report, f"{ref} is {commit.sha[:12]}")
            manifest = self.store.begin(commit, ref, who)
            self.journal.step(Step.FETCHED, release=manifest.id)
            manifest = await self._build(manifest, report)
            try:
                await self.store.release_phase(manifest, lambda line: report("release", line))
            except BaseException as e:
                self.store.mark(manifest, ReleaseState.FAILED, error=str(e) or "release phase")
                raise
            self._step(Step.RELEASED, report, "release phase done")
            await self._swap(manifest, report)
        except BaseException as e:
            self._failed(e, report)
            raise
        timings = {**manifest.timings, "deploy": round(time.monotonic() - started, 3)}
        self._done_anyway(lambda: self.store.save(replace(self.store.get(manifest.id),
                                                          timings=timings)))
        self._finish("deployed", report, manifest, ref=ref, who=who)
        return manifest

    async def _build(self, manifest: Manifest, report: Report) -> Manifest:
        if manifest.state is ReleaseState.BUILT:
            report("build", f"release {manifest.id} is already built: reusing it")
            self._step(Step.BUILT, report, "built (reused)")
            return manifest
        try:
            await self.store.export(manifest)
            manifest = await self.store.build(manifest, lambda line: report("build", line))
        except BaseException as e:
            self.store.mark(manifest, ReleaseState.FAILED, error=str(e) or type(e).__name__)
            raise
        manifest = self.store.mark(manifest, ReleaseState.BUILT)
        self._step(Step.BUILT, report, f"built {manifest.id}")
        return manifest

    async def rollback(self, target: str | None, who: str, report: Report = _quiet, *,
                       auto: bool = False) -> Manifest:
        """Swap to *target*, or to the known-good release that was live before the live one.
        An *auto* rollback's switch is settled at once: it is never rolled back by itself."""
        if target:
            manifest = self.store.get(target)
            if manifest.state is not ReleaseState.BUILT:
                raise NoRollbackTarget(f"release {target} is {manifest.state}: not a target")
        else:
            found = self.store.rollback_target()
            if found is None:
                raise NoRollbackTarget("no known-good release was live before the live one")
            manifest = found
        live = self.store.live_id()
        self._begin(JournalEntry(job="rollback", release=manifest.id, who=who,
                                 previous_release=live or ""))
        try:
            await self._swap(manifest, report, auto=auto)
        except BaseException as e:
            self._failed(e, report)
            raise
        self._finish("rolled_back", report, manifest, who=who, previous=live)
        return manifest

    async def restart(self, who: str, report: Report = _quiet) -> Manifest:
        """Fresh processes for the live release, through the same swap: no failed request."""
        manifest = self.store.live_manifest()  # rebuilt if it was lost: NotRunning if not
        self._begin(JournalEntry(job="restart", release=manifest.id, who=who))
        try:
            await self._swap(manifest, report, reuse_warm=False)
        except BaseException as e:
            self._failed(e, report)
            raise
        self._finish("restarted", report, manifest, who=who)
        return manifest

    def _begin(self, entry: JournalEntry) -> None:
        job_id = uuid.uuid4().hex[:12]
        self.journal.begin(replace(entry, job_id=job_id))  # first: it may fail (a full disk)
        self.job_started = time.monotonic()
        self.store.job_env = {JOB_ENV: job_id}

    def _end(self) -> None:
        self.store.discard_probe()
        self.store.job_env = {}
        self.journal.end()

    def _failed(self, error: BaseException, report: Report) -> None:
        entry = self.journal.entry
        message = error.message if isinstance(error, RelmanError) else type(error).__name__
        if entry is not None:
            self.store.record(f"{entry.job}_failed", release=entry.release, ref=entry.ref,
                              who=entry.who, step=str(entry.step), error=message)
        report(str(Step.FAILED), message)
        self._end()

    def _done_anyway(self, write: Callable[[], object]) -> None:
        """A write once the old server is retired: refused, it is a warning; the job stands."""
        try:
            write()
        except RelmanError as e:  # StateWriteFailed
            log.warning("job.write_failed_after_swap", error=e.message)

    def _finish(self, event: str, report: Report, manifest: Manifest, **fields: object) -> None:
        self._done_anyway(lambda: self.journal.step(Step.DONE))
        self.store.record(event, release=manifest.id, sha=manifest.sha,
                          switch_ms=self.switch_ms, **fields)
        self._end()
        report(str(Step.DONE), f"{manifest.id} is live")

    async def _start_candidate(self, manifest: Manifest,
                               report: Report) -> tuple[ServerHandle, str]:
        """A new healthy server for *manifest*, and what its health check said."""
        spec = self.server_spec(manifest)
        report("start", f"starting {spec.instance} on {spec.listener.name}")
        health = self.config.health
        try:
            with writing(spec.log):  # its first line, written before the server starts
                handle, probe = await self.supervisor.start_healthy(
                    spec, path=health.path, expect=health.expect, timeout=health.timeout)
        except Unhealthy:
            # A new release that cannot boot is failed. A known-good one that cannot (a
            # rollback or redeploy while the database is down) is not: the cause is elsewhere.
            if not manifest.known_good:  # a new release; not a redeploy of a known-good one
                self.store.mark(manifest, ReleaseState.FAILED, error="health check failed")
            raise
        return handle, f"{spec.instance} answers {health.path}: {probe.detail}"

    async def _swap(self, manifest: Manifest, report: Report, *, reuse_warm: bool = True,
                    auto: bool = False) -> None:
        """DESIGN section 5, steps 1 to 7. The job owns its candidate until the old server is
        retired: any failure before that (a full disk, a bug) stops the candidate and puts the
        links back, so the old server serves as before (see _abandon)."""
        old = self.live
        links, before = Links.read(self.root), self.record.state
        candidate: ServerHandle | None = None
        unmarked: Manifest | None = None
        try:
            self.journal.step(self.journal.entry.step if self.journal.entry else Step.BEGUN,
                              release=manifest.id, previous=old.instance if old else "")
            warm = self.warm.server(manifest.id) if reuse_warm else None
            if warm is not None and warm.alive:
                candidate, detail = warm, "warm instance"
                self.warm.cancel()
                report("start", f"{warm.instance} is still warm: switching without a restart")
            else:
                candidate, detail = await self._start_candidate(manifest, report)
                self.record.submit(Started(candidate.instance, manifest.id), strict=True)
            self._step(Step.HEALTHY, report, detail, candidate=candidate.instance)
            await self._preview(candidate, report)
            # An automatic rollback's switch is settled from the start (no cascades).
            self._switch(candidate, settled=auto)
            self.switch_ms = round((time.monotonic() - self.job_started) * 1000, 1)
            self._step(Step.SWITCHED, report, f"app.sock -> {candidate.listener.name} "
                       f"({self.switch_ms:.0f} ms after the job began)")
            await check_live(self.config.health, self.root.app_sock, candidate.protocol)
            replace_symlink(self.root.next_sock, candidate.listener.name)
            unmarked = self.store.get(manifest.id)  # what an undone swap puts back
            self.store.mark_live(manifest.id, known_good=True)
            self._step(Step.VERIFIED, report, "live route verified")
            if old is not None and old is not candidate:
                # A release rolled back from automatically is never kept warm.
                await self._retire(old, report, may_keep_warm=not auto)
        except BaseException:
            if await self._abandon(candidate, old, links, before, report) and unmarked:
                self.store.save(unmarked)  # not live after all: last_live as it was
            raise

    async def _abandon(self, candidate: ServerHandle | None, old: ServerHandle | None,
                       links: Links, before: RunState, report: Report) -> bool:
        """A swap failed: the links go back to where they were and the candidate stops, unless
        the old server was already retired (stopped or kept warm: the swap is done) or died
        while the candidate serves (going back would serve nobody). If a link cannot be put
        back and app.sock still leads to the candidate, it keeps serving. True if it went
        back."""
        if old is not None and old is not candidate and old.state in (
                ServerState.WARM, ServerState.STOPPING, ServerState.STOPPED):
            return False  # retired: the new release serves
        if old is not None and not old.alive and candidate is not None and candidate.alive \
                and read_link(self.root.app_sock) == candidate.listener.name:
            return False  # the old server crashed meanwhile: the candidate goes on serving
        try:
            if moved := links.restore():
                report("switch", "put back " + ", ".join(link.name for link in moved))
        finally:
            if candidate is not None and candidate is not old and \
                    read_link(self.root.app_sock) != candidate.listener.name:
                back = old.instance if old is not None and old.alive and \
                    self.record.state.get(old.instance) is not None else None
                # A switch back is no new switch: the one before is the last again.
                self.record.submit(SwitchedBack(back, before.linked, before.switch))
                if old is not None and old.alive and old.state is not ServerState.LIVE:
                    old.advance(ServerState.LIVE)  # it was draining
                await self.stop_server(candidate)
        return read_link(self.root.app_sock) != (candidate.listener.name if candidate else None)

    async def _preview(self, candidate: ServerHandle, report: Report) -> None:
        replace_symlink(self.root.next_sock, candidate.listener.name)
        status = await check_preview(self.config.health)
        if status is not None:
            self._step(Step.PREVIEWED, report, f"nginx preview answered {status}")

    def _switch(self, handle: ServerHandle, *, settled: bool = False) -> None:
        """Make *handle* live in the record, then point app.sock and current where the record
        says: new connections go there at once. A switch to a different release starts its
        probation (unless *settled*)."""
        if not handle.alive or self.record.state.get(handle.instance) is None:
            raise Unhealthy(f"{handle.instance} exited before the switch: see its log "
                            f"(relman logs {handle.release})")
        state = self.record.submit(SwitchedTo(handle.instance, self.config.swap.verify_window,
                                              settled=settled), strict=True)
        self.derive_links(state)
        if handle.state is not ServerState.LIVE:
            handle.advance(ServerState.LIVE)

    def derive_links(self, state: RunState) -> None:
        """run/app.sock, then current, as *state* says (never read back as the truth)."""
        if state.live is not None:
            replace_symlink(self.root.app_sock, self.root.socket(state.live.name).name)
        if state.linked:
            replace_symlink(self.root.current, Path("releases") / state.linked)

    async def _retire(self, old: ServerHandle, report: Report, *,
                      may_keep_warm: bool = True) -> None:
        """Drain the old listener, then stop it or keep it warm."""
        if not old.alive:  # it crashed during the swap: nothing to drain, what is left goes
            await self.stop_server(old)
            self._done_anyway(lambda: self._step(Step.STOPPED_OLD, report,
                                                 f"{old.instance} had exited"))
            return
        old.advance(ServerState.DRAINING)
        drained = await wait_drained(old.listener, timeout=self.config.swap.drain_timeout)
        self._step(Step.DRAINED, report,
                   f"{old.instance} drained in {drained.waited:.2f}s "
                   f"(deepest accept queue {drained.max_depth})")
        keep = self.config.swap.keep_warm
        # Warm is for a rollback target: not the live release's own old instance (a restart,
        # a redeploy of the same commit), nor a release being rolled back from as broken.
        worth = old.release != self.live_release() and may_keep_warm
        if keep > 0 and old.alive and worth:
            old.advance(ServerState.WARM)
            self._done_anyway(lambda: self.warm.keep(old, keep))
            self._done_anyway(lambda: self._step(Step.STOPPED_OLD, report,
                                                 f"{old.instance} kept warm for {keep:g}s"))
            return
        await self.stop_server(old)
        self._done_anyway(lambda: self._step(Step.STOPPED_OLD, report, f"{old.instance} stopped"))

    def live_release(self) -> str | None:
        live = self.record.state.live
        return live.release if live is not None else self.store.live_id()

    async def stop_server(self, handle: ServerHandle) -> None:
        """Stop *handle* (TERM, stop_timeout, KILL of all it runs); the record forgets it."""
        try:
            await self.supervisor.stop(handle, self.config.swap.stop_timeout)
        finally:
            self.record.submit(Gone(handle.instance))

    async def _on_crash(self, handle: ServerHandle) -> None:
        live = self.record.state.live
        self.record.submit(Gone(handle.instance))
        if live is not None and live.name == handle.instance and self.on_live_crash:
            await self.on_live_crash(handle)

    async def start(self, report: Report = _quiet, who: str = "") -> ServerHandle:
        """Start the release `current` points at, if its server is not running; *who* is
        empty when the daemon starts it by itself (after a crash or a restart)."""
        if self.live is not None and self.live.alive:
            return self.live
        manifest = self.store.live_manifest()
        release, spec, health = manifest.id, self.server_spec(manifest), self.config.health
        report("start", f"starting {spec.instance}")
        links, before = Links.read(self.root), self.record.state
        with writing(spec.log):  # a full disk: StateWriteFailed, which a restart retries
            handle, _ = await self.supervisor.start_healthy(
                spec, path=health.path, expect=health.expect, timeout=health.timeout)
        try:
            self.record.submit(Started(handle.instance, release), strict=True)
            self._switch(handle)
            replace_symlink(self.root.next_sock, handle.listener.name)
        except BaseException:
            await self._abandon(handle, None, links, before, report)
            raise
        self.store.record("started", release=release, instance=handle.instance,
                          **({"who": who} if who else {}))
        return handle

    async def stop(self, who: str) -> None:
        """Stop every app server: the site is down until `relman start`."""
        self.warm.cancel()
        for handle in list(self.supervisor.handles.values()):
            await self.stop_server(handle)
        self.store.record("stopped", who=who)

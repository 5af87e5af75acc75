"""App: deploy, rollback and restart as journaled transactions over the release store and
the supervisor."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import structlog

from relman.atomic import replace_symlink
from relman.config import Config, HealthConfig
from relman.config_values import FrozenMap
from relman.errors import NoRollbackTarget, RelmanError, Unhealthy, UsageError, writing
from relman.journal import Journal, JournalEntry, Step
from relman.releases import Manifest, ReleaseState, ReleaseStore
from relman.releases.prune import prune
from relman.results import PruneResult
from relman.settings import Settings, settings_diff, settings_of
from relman.supervisor import ServerHandle, ServerSpec, ServerState, Supervisor, Tracker
from relman.transaction.jobs import JOB_ENV, JobLog, Report
from relman.transaction.links import Links
from relman.transaction.prepare import Prepared
from relman.transaction.processes import Change, Processes
from relman.transaction.record import Clock, RunRecord
from relman.transaction.runstate import Gone, Role, RunState, Scaled, Started, SwitchedTo
from relman.transaction.specs import server_spec
from relman.transaction.swap import abandon, republish_static, swap
from relman.transaction.warm import WarmKeeper

log = structlog.get_logger(__name__)

__all__ = ["JOB_ENV", "App", "Report"]


def _quiet(_step: str, _message: str) -> None:
    return None


class App:
    """One app: its release store, its web server and processes, and the job in progress."""

    def __init__(self, config: Config, *, clock: Clock = time.time) -> None:
        self.config = config
        self.store = ReleaseStore(config)
        self.root = self.store.root
        self.supervisor = Supervisor(self.root.run, self.root.log,
                                     Tracker.for_app(config.app.name, self.root.root),
                                     on_crash=self._on_crash)
        self.journal = Journal(self.root.journal)
        self.jobs = JobLog(self.journal, self.store)
        # What runs, which release is live and linked, the last switch, the warm window and
        # the scale: one record, changed by events only (runstate.py); the links follow it.
        self.record = RunRecord(self.root.run_record, legacy=self.root.switch_record,
                                run_dir=self.root.run, clock=clock)
        self.clock = clock
        self.warm = WarmKeeper(self.record, self.supervisor.handles, self.stop_server)
        self.processes = Processes(self.store, self.supervisor, self.record)
        self.on_live_crash: Callable[[ServerHandle], Awaitable[None]] | None = None
        self.on_process_crash: Callable[[ServerHandle], Awaitable[None]] | None = None
        # `relman stop` ran, and no start, switch or restart since: a crash restart that
        # was pending then starts nothing.
        self.stopped = False
        self.prepared: Prepared | None = None  # deploy --prepare's candidate (prepare.py)

    def reload(self, config: Config) -> None:
        """Run with *config* from now on (SIGHUP, a changed file)."""
        self.config = self.store.config = config

    @property
    def switch_ms(self) -> float:
        return self.jobs.switch_ms

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

    def health(self, settings: Settings) -> HealthConfig:
        """A release's [health], through today's nginx (nginx_url is the host's, not the
        release's)."""
        return replace(settings.health, nginx_url=self.config.health.nginx_url,
                       nginx_host=self.config.health.nginx_host)

    def release_health(self, release: str) -> HealthConfig:
        """The [health] *release* runs with (its settings'; today's if unreadable)."""
        try:
            return self.health(self.store.settings(self.store.get(release)))
        except RelmanError:
            return self.config.health

    def server_spec(self, manifest: Manifest) -> ServerSpec:
        """The spec of a new instance of *manifest*'s server, with the settings it carries."""
        return server_spec(self.store.settings(manifest).server, self.config.swap.stop_timeout,
                           self.root, manifest, self.store.app_env(),
                           self.supervisor.next_instance(manifest.id))

    def _settings_changed(self, manifest: Manifest, before: Manifest | None, job: str,
                          who: str, report: Report, only: str | None = None) -> Manifest:
        """Record today's config as *manifest*'s settings (with *only*, just what it
        restarts: "web" is [server] and [health], a process name its table); changes from
        *before*'s go to the history ("server.workers 2 -> 4") if the job succeeds."""
        fresh = settings_of(self.config)
        if only is not None:
            kept = self.store.settings(manifest)
            if only == "web":
                fresh = replace(kept, server=fresh.server, health=fresh.health)
            else:
                processes = {**kept.processes, only: fresh.processes[only]}
                fresh = replace(kept, processes=FrozenMap(processes))
        manifest, _ = self.store.record_settings(manifest, settings=fresh)
        if before is not None and before.settings:
            changes = settings_diff(before.settings, manifest.settings)
            if changes:
                # Into the history once the job is done: a failed one applied nothing.
                self.jobs.on_success("settings_changed", release=manifest.id, job=job,
                                     who=who, previous=before.id, changes=changes)
                report("settings", "; ".join(changes))
        return manifest

    def live_manifest(self) -> Manifest | None:
        live = self.store.live_id()
        return self.store.get(live) if live is not None else None

    async def fetch_and_build(self, ref: str, who: str, report: Report, *,
                              release_phase: bool = True,
                              before_build: Callable[[Manifest], None] | None = None
                              ) -> Manifest:
        """A deploy's steps 1 and 2 (deploy and deploy --prepare): *ref* fetched and built,
        its release phase run unless not *release_phase*; *before_build* may refuse it."""
        self.store.probe_interpreter()
        await self.store.fetch(lambda line: report("fetch", line))
        commit = await self.store.resolve(ref)
        self.jobs.step(Step.FETCHED, report, f"{ref} is {commit.sha[:12]}")
        manifest = self.store.begin(commit, ref, who)
        self.journal.step(Step.FETCHED, release=manifest.id)
        if before_build is not None:
            before_build(manifest)
        manifest = await self._build(manifest, report)
        if not release_phase:
            self.jobs.step(Step.RELEASED, report, "release phase skipped")
            return manifest
        try:
            await self.store.release_phase(manifest, lambda line: report("release", line))
        except BaseException as e:
            self.store.mark(manifest, ReleaseState.FAILED, error=str(e) or "release phase")
            raise
        self.jobs.step(Step.RELEASED, report, "release phase done")
        return manifest

    async def deploy(self, ref: str, who: str, report: Report = _quiet) -> Manifest:
        """Fetch *ref*, build it, run the release phase and swap it in."""
        started = time.monotonic()
        self.jobs.begin(JournalEntry(job="deploy", ref=ref, who=who))
        try:
            manifest = await self.fetch_and_build(ref, who, report)
            live, unrecorded = self.live_manifest(), manifest
            manifest = self._settings_changed(manifest, live, "deploy", who, report)
            await swap(self, manifest, report, previous=live, unrecorded=unrecorded)
        except BaseException as e:
            self.jobs.failed(e, report)
            raise
        timings = {**manifest.timings, "deploy": round(time.monotonic() - started, 3)}
        self.jobs.done_anyway(lambda: self.store.save(replace(self.store.get(manifest.id),
                                                              timings=timings)))
        self.jobs.finish("deployed", report, manifest, ref=ref, who=who)
        return manifest

    async def _build(self, manifest: Manifest, report: Report) -> Manifest:
        if manifest.state is ReleaseState.BUILT:
            report("build", f"release {manifest.id} is already built: reusing it")
            self.jobs.step(Step.BUILT, report, "built (reused)")
            return manifest
        try:
            manifest = await self.store.export(manifest, lambda line: report("build", line))
            manifest = await self.store.build(manifest, lambda line: report("build", line))
        except BaseException as e:
            self.store.mark(manifest, ReleaseState.FAILED, error=str(e) or type(e).__name__)
            raise
        manifest = self.store.mark(manifest, ReleaseState.BUILT)
        self.jobs.step(Step.BUILT, report, f"built {manifest.id}")
        return manifest

    async def rollback(self, target: str | None, who: str, report: Report = _quiet, *,
                       auto: bool = False) -> Manifest:
        """Swap to *target*, or to the known-good release that was live before the live one,
        with the settings it ran with. An *auto* rollback's switch is settled at once: it is
        never rolled back by itself."""
        manifest = self.rollback_target(target)
        live = self.store.live_id()
        self.jobs.begin(JournalEntry(job="rollback", release=manifest.id, who=who,
                                     previous_release=live or ""))
        try:
            await swap(self, manifest, report, auto=auto)
        except BaseException as e:
            self.jobs.failed(e, report)
            raise
        self.jobs.finish("rolled_back", report, manifest, who=who, previous=live)
        return manifest

    def rollback_target(self, target: str | None) -> Manifest:
        """*target*'s manifest (a built release), or the rollback target; else NoRollbackTarget."""
        if target:
            manifest = self.store.get(target)
            if manifest.state is not ReleaseState.BUILT:
                raise NoRollbackTarget(f"release {target} is {manifest.state}: not a target")
            return manifest
        found = self.store.rollback_target()
        if found is None:
            raise NoRollbackTarget("no known-good release was live before the live one")
        return found

    async def restart(self, who: str, report: Report = _quiet, name: str | None = None
                      ) -> Manifest:
        """Fresh instances for the live release with today's config, through the same swap
        (no failed request) and handover: of everything, the web server (*name* "web") or
        one process type (rolling, one instance at a time, for an overlap type)."""
        manifest = self.store.live_manifest()  # rebuilt if it was lost: NotRunning if not
        if name == "web" and self.store.settings(manifest).server.kind == "none":
            raise UsageError("relman restart web: this app has no web server "
                             '([server] kind = "none")')
        if name not in (None, "web") and name not in self.config.processes:
            raise UsageError(f"relman restart {name}: no process named {name!r} in "
                             f"{self.config.path} (processes: "
                             f"{', '.join(['web', *self.config.processes])})")
        self.jobs.begin(JournalEntry(job="restart", release=manifest.id, who=who))
        before = manifest  # the settings it runs with: a failed restart keeps them
        try:
            manifest = self._settings_changed(manifest, manifest, "restart", who, report,
                                              only=name)
            if name is None or name == "web":
                await swap(self, manifest, report, reuse_warm=False, processes=name is None,
                           previous=before, unrecorded=before)
            else:
                async with self.processes.lock:
                    try:
                        change = await self.processes.hand_over(manifest, only=name,
                                                                rolling=True)
                    except BaseException:
                        self.store.save(replace(self.store.get(manifest.id),
                                                settings=before.settings))
                        await self.processes.restore(before, since=self.jobs.started)
                        raise
                self.jobs.step(Step.HANDED_OVER, report, f"{len(change.started)} {name} "
                               "instance(s) restarted")
        except BaseException as e:
            self.jobs.failed(e, report)
            raise
        self.jobs.finish("restarted", report, manifest, who=who, process=name or "all")
        return manifest

    def switch_to(self, handle: ServerHandle | None, release: str, *,
                settled: bool = False) -> None:
        """Make *handle* live in the record (or, with no web server, *release*), then point
        app.sock and current where the record says: new connections go there at once. A
        switch to a different release starts its probation (unless *settled*)."""
        if handle is not None and (not handle.alive
                                   or self.record.state.get(handle.instance) is None):
            raise Unhealthy(f"{handle.instance} exited before the switch: see its log "
                            f"(relman logs {handle.release})")
        state = self.record.submit(SwitchedTo(handle.instance if handle else "",
                                              self.config.swap.verify_window, settled=settled,
                                              release=release), strict=True)
        self.stopped = False
        self.derive_links(state)
        if handle is not None and handle.state is not ServerState.LIVE:
            handle.advance(ServerState.LIVE)

    def derive_links(self, state: RunState) -> None:
        """run/app.sock, then current, as *state* says (never read back as the truth)."""
        if state.live is not None:
            replace_symlink(self.root.app_sock, self.root.socket(state.live.name).name)
        if state.linked:
            replace_symlink(self.root.current, Path("releases") / state.linked)

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
        state = self.record.state
        was = state.get(handle.instance)
        self.record.submit(Gone(handle.instance))
        if not handle.is_web:
            # Only a live one is restarted: a candidate's exit fails its handover.
            if was is not None and was.role is Role.LIVE and self.on_process_crash:
                await self.on_process_crash(handle)
            return
        live = state.live
        if live is not None and live.name == handle.instance and self.on_live_crash:
            await self.on_live_crash(handle)

    async def start(self, report: Report = _quiet, who: str = "") -> ServerHandle | None:
        """Start the release `current` points at: its server if it is not running, and its
        processes that are not; *who* is empty when the daemon starts it by itself (after
        a crash or a restart). The web server, or None without one."""
        manifest = self.store.live_manifest()
        settings = self.store.settings(manifest)
        self.stopped = False
        handle = self.live if self.live is not None and self.live.alive else None
        if handle is None and settings.server.kind != "none":
            handle = await self._start_web(manifest, settings, report)
            self.store.record("started", release=manifest.id, instance=handle.instance,
                              **({"who": who} if who else {}))
        elif settings.server.kind == "none" and self.record.state.linked != manifest.id:
            self.switch_to(None, manifest.id)
        async with self.processes.lock:
            change = await self.processes.converge(manifest)
        if change.started:
            report("start", f"started {len(change.started)} process instance(s)")
        await self.processes.settle(change)
        return handle

    async def _start_web(self, manifest: Manifest, settings: Settings,
                         report: Report) -> ServerHandle:
        spec, health = self.server_spec(manifest), self.health(settings)
        report("start", f"starting {spec.instance}")
        links, before = Links.read(self.root), self.record.state
        with writing(spec.log):  # a full disk: StateWriteFailed, which a restart retries
            handle, _ = await self.supervisor.start_healthy(
                spec, path=health.path, expect=health.expect, timeout=health.timeout)
        try:
            self.record.submit(Started(handle.instance, manifest.id), strict=True)
            self.switch_to(handle, manifest.id)
            replace_symlink(self.root.next_sock, handle.listener.name)
        except BaseException:
            await abandon(self, handle, None, links, before, report)
            raise
        return handle

    async def scale(self, counts: dict[str, int], *, reset: bool, who: str,
                    report: Report = _quiet) -> Change:
        """`relman scale NAME=N ...` (or `--reset`): the counts hold across deploys,
        rollbacks and daemon restarts until changed, and apply now."""
        manifest = self.store.live_manifest()  # NotRunning when nothing is live
        names = self.store.settings(manifest).processes
        for name, count in counts.items():
            if name == "web":
                raise UsageError("relman scale web: the web server is one process group; "
                                 "set server.workers and run relman restart")
            if name not in names:
                raise UsageError(f"relman scale {name}={count}: the live release "
                                 f"{manifest.id} has no process named {name!r} (it has: "
                                 f"{', '.join(names) or 'none'})")
            if count < 0:
                raise UsageError(f"relman scale {name}={count}: a count is 0 or more")
        self.record.submit(Scaled(tuple(counts.items()), reset=reset), strict=True)
        async with self.processes.lock:
            change = await self.processes.converge(manifest)
        await self.processes.settle(change)
        report("scale", f"{len(change.started)} started, {len(change.stopped)} stopped")
        self.store.record("scaled", release=manifest.id, who=who, counts=counts, reset=reset)
        return change

    async def prune(self) -> PruneResult:
        """Remove releases and venvs beyond keep_releases: never the live release, the
        rollback target, or a release that runs or is recorded as running."""
        store = self.store
        target = store.rollback_target()
        running = frozenset({h.release for h in self.supervisor.handles.values() if h.alive}
                            | {i.release for i in self.record.state.instances})
        # In a thread: removing a large tree or venv must not stall the control socket.
        result = await asyncio.to_thread(
            prune, self.root, store.manifests(), keep=self.config.app.keep_releases,
            live=store.live_id(), target=target.id if target else None, running=running)
        if result.releases or result.venvs:
            store.record("pruned", releases=list(result.releases), venvs=list(result.venvs))
        # A file leaves static/ with the last kept release that has it.
        await republish_static(self)
        return result

    async def stop(self, who: str) -> None:
        """Stop the web server and every process: the app is down until `relman start`."""
        self.warm.cancel()
        self.stopped = True
        async with self.processes.lock:
            await self.processes.stop(self.processes.running())
        for handle in list(self.supervisor.handles.values()):
            await self.stop_server(handle)
        self.store.record("stopped", who=who)

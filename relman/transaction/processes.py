"""Processes: the app's [processes.NAME] instances beside its web server (DESIGN section 8).

They run for the live release, as many as its settings say (or `relman scale`), are handed
over to a new release once its web switch is verified (stop-first or overlap), are started
again when they crash, and stop with the app. One lock orders every change to them: a
crash restart never races a handover, a scale or a stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import structlog

from relman.config import ProcessConfig
from relman.errors import ProcessFailed, RelmanError, Unhealthy, UnknownRelease, writing
from relman.logs import tail_file
from relman.releases import Manifest, ReleaseStore
from relman.settings import Settings
from relman.supervisor import ServerHandle, ServerState, Supervisor
from relman.transaction.record import RunRecord
from relman.transaction.runstate import Adopted, Gone, Role, Started, process_counts
from relman.transaction.specs import process_spec

log = structlog.get_logger(__name__)

Slot = tuple[str, int]  # (process name, instance index)
OVERLAP = "overlap"


@dataclass(frozen=True, slots=True)
class Change:
    """What a converge or a handover did; *new* are a converge's new instances, live once
    settle() saw them stay up."""

    started: tuple[str, ...] = ()
    stopped: tuple[str, ...] = ()
    new: tuple[ServerHandle, ...] = field(default=(), compare=False, repr=False)
    settings: Settings | None = field(default=None, compare=False, repr=False)


def plan_converge(counts: dict[str, int], release: str,
                  running: Iterable[tuple[str, str, int, str]]
                  ) -> tuple[list[Slot], list[str]]:
    """Which slots to start and which instances to stop so that exactly *counts* instances
    of *release* run. *running* holds (instance, release, index, process) of what runs;
    an instance of another release, of a type the release lacks, beyond its count, or a
    second one in a slot is stopped."""
    kept: set[Slot] = set()
    stop = []
    for name, run_release, index, process in sorted(running, key=lambda r: r[0]):
        slot = (process, index)
        if run_release == release and index <= counts.get(process, 0) and slot not in kept:
            kept.add(slot)
        else:
            stop.append(name)
    start = [(name, i) for name, count in counts.items() for i in range(1, count + 1)
             if (name, i) not in kept]
    return start, stop


class Processes:
    """The process instances of one app: started, handed over, scaled, stopped."""

    def __init__(self, store: ReleaseStore, supervisor: Supervisor, record: RunRecord) -> None:
        self.store, self.supervisor, self.record = store, supervisor, record
        self.root = store.root
        self.lock = asyncio.Lock()
        self.restarts: Counter[tuple[str, str, int]] = Counter()  # (release, name, index)

    # --- what runs and what should -----------------------------------------------------

    def running(self, release: str | None = None, name: str | None = None
                ) -> list[ServerHandle]:
        return [h for h in self.supervisor.handles.values()
                if not h.is_web and h.alive and (release is None or h.release == release)
                and (name is None or h.process == name)]

    def settings(self, manifest: Manifest) -> Settings:
        return self.store.settings(manifest)

    def counts(self, settings: Settings) -> dict[str, int]:
        """How many of each type the release should run: its settings, then `scale`."""
        return process_counts({n: p.count for n, p in settings.processes.items()},
                              self.record.state.scale)

    def _config_of(self, handle: ServerHandle) -> ProcessConfig | None:
        """The settings *handle* was started with (its release's), else the config's."""
        try:
            found = self.settings(self.store.get(handle.release)).processes.get(handle.process)
        except (UnknownRelease, OSError, ValueError):
            found = None
        return found or self.store.config.processes.get(handle.process)

    # --- starting and stopping ---------------------------------------------------------

    async def start_slots(self, manifest: Manifest, settings: Settings,
                          slots: Sequence[Slot], role: Role) -> list[ServerHandle]:
        """Start one instance per slot of *manifest*, recorded in *role*. One that cannot
        be started at all (its program is not on the release's PATH) is ProcessFailed, and
        those this call started are stopped."""
        env = self.store.app_env()
        started: list[ServerHandle] = []
        for name, index in slots:
            instance = self.supervisor.next_instance(manifest.id, name, index)
            spec = process_spec(settings.processes[name], self.root, manifest, env,
                                name=name, index=index, instance=instance)
            try:
                with writing(spec.log):
                    handle = self.supervisor.start(spec)
            except Unhealthy as e:  # the spawn failed (no such program, not executable)
                await self.stop(started)
                with contextlib.suppress(OSError), spec.log.open("a") as out:
                    out.write(f"--- relman: {e.message}\n")
                raise ProcessFailed(
                    f"process {name} of {manifest.id}: {e.message}; [processes.{name}] "
                    f"command runs in the release with its venv first on PATH (a program "
                    f"the app needs belongs in its requirements)") from None
            started.append(handle)
            self.record.submit(Started(handle.instance, manifest.id, role, name, index))
        return started

    async def wait_started(self, handles: Sequence[ServerHandle], settings: Settings) -> None:
        """Each of *handles* stays up its type's start_seconds; else ProcessFailed with the
        last lines of its log (the others are left running: the caller stops them)."""
        async def watch(handle: ServerHandle) -> None:
            seconds = settings.processes[handle.process].start_seconds
            left = handle.started_mono + seconds - time.monotonic()
            if not await handle.wait_exited(max(0.0, left)):
                return
            lived = time.monotonic() - handle.started_mono
            raise ProcessFailed(
                f"process {handle.process} {handle.index} of {handle.release} exited "
                f"{lived:.1f}s after it started (code {handle.returncode}), before its "
                f"start_seconds ({seconds:g}s): see relman logs --process {handle.process}",
                tail=tail_file(handle.log, 40))

        tasks = [asyncio.create_task(watch(h)) for h in handles]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()

    async def stop(self, handles: Iterable[ServerHandle]) -> tuple[str, ...]:
        """Stop *handles* together, each with its stop_signal and stop_timeout; one that
        had to be SIGKILLed is recorded in the history."""
        handles = list(handles)
        await asyncio.gather(*(self._stop_one(h) for h in handles))
        return tuple(h.instance for h in handles)

    async def _stop_one(self, handle: ServerHandle) -> None:
        config = self._config_of(handle)
        timeout = config.stop_timeout if config else self.store.config.swap.stop_timeout
        try:
            graceful = await self.supervisor.stop(handle, timeout)
        finally:
            self.record.submit(Gone(handle.instance))
        if not graceful:
            self.store.record("process_killed", release=handle.release,
                              process=handle.process, index=handle.index, pid=handle.pid,
                              after=timeout)

    def _promote(self, handles: Iterable[ServerHandle]) -> None:
        """*handles* stayed up their start_seconds: they are live."""
        for h in handles:
            self.record.submit(Adopted(h.instance, h.release, Role.LIVE, h.process, h.index))
            if h.alive and h.state is ServerState.STARTING:
                h.advance(ServerState.HEALTHY)
            if h.alive and h.state is ServerState.HEALTHY:
                h.advance(ServerState.LIVE)

    # --- the operations ----------------------------------------------------------------

    async def converge(self, manifest: Manifest, *, slots: Sequence[Slot] | None = None
                       ) -> Change:
        """Make what runs match *manifest*'s counts: stop what should not run first (a
        scheduler never runs twice), then start what is missing. With *slots*, only
        those are started if missing, and nothing is stopped (a crash restart)."""
        settings = self.settings(manifest)
        counts = self.counts(settings)
        start, stop = plan_converge(counts, manifest.id, (
            (h.instance, h.release, h.index, h.process) for h in self.running()))
        if slots is not None:
            start, stop = [s for s in start if s in slots], []
        stopped = await self.stop(h for h in self.running() if h.instance in stop)
        started = await self.start_slots(manifest, settings, start, Role.LIVE)
        return Change(tuple(h.instance for h in started), stopped, tuple(started), settings)

    async def settle(self, change: Change) -> None:
        """A converge's new instances are live once they stayed up their start_seconds;
        else ProcessFailed (the others run on). Awaited outside the lock: one instance's
        start_seconds never delays another's crash restart."""
        if change.new and change.settings is not None:
            await self.wait_started(change.new, change.settings)
            self._promote(change.new)

    async def converge_none(self) -> Change:
        """Nothing is live: no process runs."""
        return Change(stopped=await self.stop(self.running()))

    async def hand_over(self, manifest: Manifest, *, only: str | None = None,
                        rolling: bool = False) -> Change:
        """Replace every running instance (of type *only*, if given) with fresh ones of
        *manifest*: stop-first types stop before the new ones start, overlap types after
        the new ones stayed up start_seconds. A new instance that does not stay up raises
        ProcessFailed after the new ones are stopped; old stop-first ones are not started
        again here (restore() does it). *rolling*: overlap types one instance at a time."""
        settings = self.settings(manifest)
        counts = {n: c for n, c in self.counts(settings).items() if only in (None, n)}
        old = [h for h in self.running() if only in (None, h.process)]
        overlap = {n for n, p in settings.processes.items() if p.handover == OVERLAP}
        if rolling:
            return await self._roll(manifest, settings, counts, old, overlap)
        stopped = await self.stop(h for h in old if h.process not in overlap)
        slots = [(n, i) for n, count in counts.items() for i in range(1, count + 1)]
        new = await self._start_steady(manifest, settings, slots)
        stopped += await self.stop(h for h in old if h.process in overlap)
        return Change(tuple(h.instance for h in new), stopped)

    async def _start_steady(self, manifest: Manifest, settings: Settings,
                            slots: Sequence[Slot]) -> list[ServerHandle]:
        """New instances of *slots*, live once they all stayed up their start_seconds;
        if one does not, they are stopped and ProcessFailed is raised."""
        new = await self.start_slots(manifest, settings, slots, Role.CANDIDATE)
        try:
            await self.wait_started(new, settings)
        except BaseException:
            await self.stop(new)
            raise
        self._promote(new)
        return new

    async def _roll(self, manifest: Manifest, settings: Settings, counts: dict[str, int],
                    old: list[ServerHandle], overlap: set[str]) -> Change:
        """A rolling restart: overlap types slot by slot (start, stay up, stop the old
        one), stop-first types all at once."""
        started: list[str] = []
        stopped: list[str] = []
        for name, count in counts.items():
            mine = [h for h in old if h.process == name]
            if name not in overlap:
                stopped += await self.stop(mine)
                new = await self._start_steady(manifest, settings,
                                               [(name, i) for i in range(1, count + 1)])
                started += [h.instance for h in new]
                continue
            for index in range(1, count + 1):
                new = await self._start_steady(manifest, settings, [(name, index)])
                started += [h.instance for h in new]
                stopped += await self.stop(h for h in mine if h.index == index)
            stopped += await self.stop(h for h in mine if h.index > count and h.alive)
        stopped += await self.stop(h for h in old if h.process not in counts and h.alive)
        return Change(tuple(started), tuple(stopped))

    async def restore(self, manifest: Manifest | None, *, since: float | None = None) -> None:
        """After a failed handover: the instances of *manifest* (the release live again)
        run as before; those started after *since* (monotonic: a rolling restart's new ones,
        with the settings that failed) are replaced. A failure here is logged: the job's own
        error is the one to show."""
        try:
            if since is not None:
                await self.stop(h for h in self.running() if h.started_mono >= since)
            if manifest is None:
                await self.stop(self.running())
            else:
                await self.settle(await self.converge(manifest))
        except RelmanError as e:
            log.warning("processes.restore_failed", error=e.message)
            self.store.record("processes_restore_failed",
                              release=manifest.id if manifest else "", error=e.message)

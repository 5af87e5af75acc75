"""The swap (DESIGN section 5): start and check the candidate, preview it through nginx,
switch, verify, hand the processes over, drain and retire the old server; and, when any
step fails, put everything back as it was (abandon)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import TYPE_CHECKING

import structlog

from relman.atomic import read_link, replace_symlink
from relman.config import HealthConfig
from relman.errors import ProcessFailed, RelmanError, Unhealthy, writing
from relman.journal import Step
from relman.releases import Manifest, ReleaseState
from relman.releases.static import Published
from relman.supervisor import ServerHandle, ServerState
from relman.supervisor.drain import wait_drained
from relman.supervisor.health import in_range, probe_socket
from relman.transaction.jobs import Report
from relman.transaction.links import Links
from relman.transaction.processes import Change
from relman.transaction.routes import check_live, check_preview
from relman.transaction.runstate import RunState, Started, SwitchedBack

if TYPE_CHECKING:
    from relman.transaction.app import App

log = structlog.get_logger(__name__)


async def start_candidate(app: App, manifest: Manifest, health: HealthConfig,
                           report: Report) -> tuple[ServerHandle, str]:
    """A new healthy server for *manifest*, and what its health check said."""
    spec = app.server_spec(manifest)
    report("start", f"starting {spec.instance} on {spec.listener.name}")
    try:
        with writing(spec.log):  # its first line, written before the server starts
            handle, probe = await app.supervisor.start_healthy(
                spec, path=health.path, expect=health.expect, timeout=health.timeout)
    except Unhealthy:
        # A new release that cannot boot is failed. A known-good one that cannot (a
        # rollback or redeploy while the database is down) is not: the cause is elsewhere.
        if not manifest.known_good:  # a new release; not a redeploy of a known-good one
            app.store.mark(manifest, ReleaseState.FAILED, error="health check failed")
        raise
    return handle, f"{spec.instance} answers {health.path}: {probe.detail}"

async def swap(app: App, manifest: Manifest, report: Report, *, reuse_warm: bool = True,
                auto: bool = False, processes: bool = True,
                previous: Manifest | None = None, unrecorded: Manifest | None = None,
                prepared: ServerHandle | None = None, keep_warm: float | None = None
                ) -> None:
    """DESIGN section 5, steps 1 to 7, with the processes handed over between the
    verified switch and the old server's retirement. The job owns its candidate until
    the old server is retired: any failure before that (a process that does not stay
    up, a full disk, a bug) stops the candidate and puts the links and the processes
    back, so the old release serves as before (see abandon). *previous*: the live
    release's manifest as it ran, when the job recorded new settings in it already;
    *unrecorded*: *manifest* before the job recorded today's settings in it (an undone
    swap puts back the settings a known release ran with). *prepared*: the candidate
    `deploy --prepare` started and previewed (steps 1 to 3 done; `relman switch`);
    *keep_warm*: the old server's warm window, instead of swap.keep_warm."""
    old = app.live
    links, before = Links.read(app.root), app.record.state
    previous = previous or app.live_manifest()
    settings = app.store.settings(manifest)
    health = app.health(settings)
    web = settings.server.kind != "none"
    candidate: ServerHandle | None = None
    unmarked: Manifest | None = None
    handed_over = published = False
    try:
        app.journal.step(app.journal.entry.step if app.journal.entry else Step.BEGUN,
                          release=manifest.id, previous=old.instance if old else "")
        if web and prepared is not None:
            candidate = prepared
            await still_healthy(candidate, health, report)
        elif web:
            candidate, detail = await healthy_candidate(app, manifest, health, report,
                                                        reuse_warm=reuse_warm)
            app.jobs.step(Step.HEALTHY, report, detail, candidate=candidate.instance)
            await preview(app, candidate, health, report)
        published = True
        await publish_static(app, manifest, report)
        unmarked = app.store.get(manifest.id)  # what an undone swap puts back
        async with app.processes.lock:  # no crash restart between switch and handover
            await switch_verified(app, candidate, manifest, health, report, auto=auto)
            if processes:
                handed_over = True
                change = await app.processes.hand_over(manifest)
                app.jobs.step(Step.HANDED_OVER, report, _handed_over(change))
        if old is not None and old is not candidate:
            # A release rolled back from automatically is never kept warm.
            await retire(app, old, report, may_keep_warm=not auto, keep_warm=keep_warm)
        if not web:
            app.root.app_sock.unlink(missing_ok=True)
            app.root.next_sock.unlink(missing_ok=True)
    except BaseException as e:
        if await abandon(app, candidate, old, links, before, report):
            await _went_back(app, e, manifest, unmarked=unmarked, unrecorded=unrecorded,
                             previous=previous, handed_over=handed_over,
                             published=published)
        raise


async def _went_back(app: App, e: BaseException, manifest: Manifest, *,
                     unmarked: Manifest | None, unrecorded: Manifest | None,
                     previous: Manifest | None, handed_over: bool, published: bool) -> None:
    """A failed swap went back: *manifest*'s record as it was before the swap
    (*unmarked*, *unrecorded*), the processes of *previous* (None: none) again if they
    were *handed_over*, and the live release's static files if *published*."""
    if unmarked:
        app.store.save(unmarked)  # not live after all: last_live as it was
        # A new release whose process does not stay up is failed (a known-good one
        # that cannot, in a rollback, is not: the cause is elsewhere).
        if isinstance(e, ProcessFailed) and not unmarked.known_good:
            app.store.mark(unmarked, ReleaseState.FAILED, error=e.message)
    if unrecorded is not None and unrecorded.settings:
        # A release that ran before (a restart, a redeploy) keeps the settings it ran
        # with: those of a failed attempt would be a rollback's, or a crash restart's.
        app.store.save(replace(app.store.get(manifest.id), settings=unrecorded.settings))
    if handed_over:
        async with app.processes.lock:
            await app.processes.restore(previous)
    if published:  # the live release's files win again
        await republish_static(app)


async def publish_static(app: App, manifest: Manifest, report: Report) -> None:
    """Step 3b: the [static] files of the kept releases into static/, *manifest*'s first
    (it wins a path two releases have), before anything points at it: its pages find
    their assets from the first request on. Off the event loop: it walks every tree."""
    result = await asyncio.to_thread(app.store.publish_static, manifest.id)
    if app.store.settings(manifest).static or result.removed:
        app.jobs.step(Step.PUBLISHED, report, _published(result))


async def republish_static(app: App) -> None:
    """After a swap that published and went back, or a prune: the live release wins
    again. A failure is a warning only: the release that serves keeps serving, and
    every later publication starts from what is there."""
    try:
        await asyncio.to_thread(app.store.publish_static, app.store.live_id())
    except (OSError, RelmanError) as e:
        log.warning("static.republish_failed", error=str(e))


async def switch_verified(app: App, candidate: ServerHandle | None, manifest: Manifest,
                          health: HealthConfig, report: Report, *, auto: bool) -> None:
    """Steps 4 and 5: the switch, then the live route checked; the release went live."""
    # An automatic rollback's switch is settled from the start (no cascades).
    app.switch_to(candidate, manifest.id, settled=auto)
    where = (f"app.sock -> {candidate.listener.name}" if candidate is not None
             else f"current -> {manifest.id} (no web server)")
    app.jobs.step(Step.SWITCHED, report,
                  f"{where} ({app.jobs.switched():.0f} ms after the job began)")
    if candidate is not None:
        await check_live(health, app.root.app_sock, candidate.protocol)
        replace_symlink(app.root.next_sock, candidate.listener.name)
    app.store.mark_live(manifest.id, known_good=True)
    app.jobs.step(Step.VERIFIED, report,
                  "live route verified" if candidate is not None else "switched")


async def still_healthy(candidate: ServerHandle, health: HealthConfig, report: Report
                        ) -> None:
    """A prepared candidate, before its switch: running and answering its health check
    (it may have died since it was prepared); else Unhealthy."""
    if not candidate.alive:
        raise Unhealthy(f"the prepared candidate {candidate.instance} is not running")
    probe = await probe_socket(candidate.listener, protocol=candidate.protocol,
                               path=health.path, timeout=health.timeout)
    if not in_range(probe.status, health.expect):
        raise Unhealthy(f"the prepared candidate {candidate.instance} answers "
                        f"{health.path}: {probe.detail}")
    report("healthy", f"prepared {candidate.instance} answers {health.path}: {probe.detail}")


async def healthy_candidate(app: App, manifest: Manifest, health: HealthConfig,
                            report: Report, *, reuse_warm: bool) -> tuple[ServerHandle, str]:
    """The warm server of *manifest*, or a new one that passed its health check; and what
    its check said."""
    warm = app.warm.server(manifest.id) if reuse_warm else None
    if warm is not None and warm.alive:
        candidate, detail = warm, "warm instance"
        app.warm.cancel()
        report("start", f"{warm.instance} is still warm: switching without a restart")
    else:
        candidate, detail = await start_candidate(app, manifest, health, report)
        try:
            app.record.submit(Started(candidate.instance, manifest.id), strict=True)
        except BaseException:  # not the job's yet: nobody else would stop it
            await app.stop_server(candidate)
            raise
    return candidate, detail

async def abandon(app: App, candidate: ServerHandle | None, old: ServerHandle | None,
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
            and read_link(app.root.app_sock) == candidate.listener.name:
        return False  # the old server crashed meanwhile: the candidate goes on serving
    switched = app.record.state.linked != before.linked or (
        candidate is not None and app.record.state.live is not None
        and app.record.state.live.name == candidate.instance)
    try:
        if moved := links.restore():
            report("switch", "put back " + ", ".join(link.name for link in moved))
    finally:
        serving = candidate is not None and \
            read_link(app.root.app_sock) == candidate.listener.name
        if switched and not serving:
            back = old.instance if old is not None and old.alive and \
                app.record.state.get(old.instance) is not None else None
            # A switch back is no new switch: the one before is the last again.
            app.record.submit(SwitchedBack(back, before.linked, before.switch))
            if old is not None and old.alive and old.state is not ServerState.LIVE:
                old.advance(ServerState.LIVE)  # it was draining
        if candidate is not None and candidate is not old and not serving:
            await app.stop_server(candidate)
    return candidate is None or read_link(app.root.app_sock) != candidate.listener.name

async def preview(app: App, candidate: ServerHandle, health: HealthConfig,
                   report: Report) -> None:
    replace_symlink(app.root.next_sock, candidate.listener.name)
    status = await check_preview(health)
    if status is not None:
        app.jobs.step(Step.PREVIEWED, report, f"nginx preview answered {status}")


async def retire(app: App, old: ServerHandle, report: Report, *,
                 may_keep_warm: bool = True, keep_warm: float | None = None) -> None:
    """Drain the old listener, then stop it or keep it warm (*keep_warm* seconds, or
    swap.keep_warm)."""
    if not old.alive:  # it crashed during the swap: nothing to drain, what is left goes
        await app.stop_server(old)
        app.jobs.done_anyway(lambda: app.jobs.step(Step.STOPPED_OLD, report,
                                                     f"{old.instance} had exited"))
        return
    old.advance(ServerState.DRAINING)
    drained = await wait_drained(old.listener, timeout=app.config.swap.drain_timeout)
    app.jobs.step(Step.DRAINED, report,
                   f"{old.instance} drained in {drained.waited:.2f}s "
                   f"(deepest accept queue {drained.max_depth})")
    keep = app.config.swap.keep_warm if keep_warm is None else keep_warm
    # Warm is for a rollback target: not the live release's own old instance (a restart,
    # a redeploy of the same commit), nor a release being rolled back from as broken.
    worth = old.release != app.live_release() and may_keep_warm
    if keep > 0 and old.alive and worth:
        old.advance(ServerState.WARM)
        app.jobs.done_anyway(lambda: app.warm.keep(old, keep))
        app.jobs.done_anyway(lambda: app.jobs.step(
            Step.STOPPED_OLD, report, f"{old.instance} kept warm for {keep:g}s"))
        return
    await app.stop_server(old)
    app.jobs.done_anyway(lambda: app.jobs.step(Step.STOPPED_OLD, report,
                                                 f"{old.instance} stopped"))


def _published(result: Published) -> str:
    skipped = f", {len(result.skipped)} symbolic link(s) skipped" if result.skipped else ""
    return (f"static files: {result.linked} linked, {result.copied} copied, "
            f"{result.unchanged} unchanged, {result.removed} removed{skipped}")


def _handed_over(change: Change) -> str:
    if not change.started and not change.stopped:
        return "no processes"
    return f"processes: {len(change.started)} started, {len(change.stopped)} stopped"

"""The job a daemon crash interrupted: what it left running is killed, a half-built release
is marked failed, an automatic rollback that got past its switch is completed."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
from typing import Final

import psutil

from relman.journal import Step, after
from relman.releases import ReleaseState
from relman.transaction.app import App
from relman.transaction.jobs import JOB_ENV
from relman.transaction.swap import republish_static

AUTO_WHO: Final = "relman (auto: "  # who, in the journal and history, of automatic rollbacks


def kill_job_processes(job_id: str) -> int:
    """SIGKILL what an interrupted job left running (a pip install, a migration): every
    process whose environment carries RELMAN_JOB=<job_id>, which all its descendants inherit.
    """
    killed = 0
    for proc in psutil.process_iter(["pid"]):
        with contextlib.suppress(psutil.Error, ProcessLookupError):
            if proc.pid != os.getpid() and proc.environ().get(JOB_ENV) == job_id:
                os.kill(proc.pid, signal.SIGKILL)
                killed += 1
    return killed


async def undo_interrupted_job(app: App, notes: list[str]) -> None:
    """Kill what the interrupted job left running and mark its half-built release failed."""
    entry = app.journal.unfinished()
    if entry is None:
        return
    notes.append(f"interrupted {entry.job} of {entry.release or entry.ref} after step "
                 f"{entry.step}")
    # A scan of every process: in a thread, off the event loop.
    if entry.job_id and (killed := await asyncio.to_thread(kill_job_processes, entry.job_id)):
        notes.append(f"killed {killed} process(es) the interrupted job left running")
    app.store.record("job_interrupted", job=entry.job, release=entry.release,
                     ref=entry.ref, who=entry.who, step=str(entry.step))
    # An automatic rollback that got past its switch: the release it rolled back from was
    # about to be marked failed (that waits for the rollback to succeed). Do it now.
    switched = entry.job == "rollback" and entry.who.startswith(AUTO_WHO) and \
        not after(Step.SWITCHED, entry.step)
    await repair_shared_files(app, entry.release, notes)
    for manifest in app.store.manifests():
        if manifest.id == entry.release and manifest.state is ReleaseState.UNFINISHED:
            app.store.mark(manifest, ReleaseState.FAILED, error="interrupted")
            shutil.rmtree(app.root.release_dir(manifest.id), ignore_errors=True)
            notes.append(f"half-built release {manifest.id} marked failed and removed")
        if switched and manifest.id == entry.previous_release and \
                manifest.state is ReleaseState.BUILT:
            app.store.mark(manifest, ReleaseState.FAILED, error=entry.who[len(AUTO_WHO):-1])
            notes.append(f"{manifest.id}, rolled back from automatically, marked failed")
    # A publication cut short, or done for a switch that never came: static/ as the live
    # release wants it (its files win a shared path; a removed half-built tree's go).
    await republish_static(app)
    app.journal.end()


async def repair_shared_files(app: App, release: str, notes: list[str]) -> None:
    """A build or release step cut short may have written in place into files *release*
    shares with the live release (build.link_unchanged): the live release gets its own
    back, before the half-built tree goes (its index says which files they shared)."""
    live = app.store.live_id()
    if not release or not live or release == live:
        return
    from relman.releases import linking  # deploy-only: not in the idle daemon

    root = app.root
    repaired = await asyncio.to_thread(
        linking.repair_abandoned, root.repo, root.tree_index(release),
        root.release_dir(release), root.release_dir(live), root.tree_index(live))
    if repaired:
        notes.append(f"{len(repaired)} file(s) of {live} written in place through "
                     f"{release} got fresh copies ({', '.join(repaired[:3])})")

"""The host side of a fleet deploy, as a coordinator runs it and runs it again (DESIGN
section 9, issue 10): `deploy REF --prepare`, `rollback [RELEASE] --prepare` and
`deploy REF --build-only`, each done when its release is where it should be already.

Decisions (man/relman.1 says them too):
- A coordinator killed mid-deploy leaves hosts live on the new release, prepared with it,
  or still on the old one. Run again, it must converge, so a prepare of a release that is
  live already answers live=True (exit 0, nothing started), and one of the release that
  is prepared already answers with that candidate and its deadline (exit 0, no second
  candidate, no new deadline). A prepared candidate whose server has exited is aborted
  and prepared again: switching to it would fail. So is one prepared with
  --no-release-phase when a prepare with the release phase comes (a rerun whose
  release_host is another host now): the migrations must not be skipped.
- Another release prepared: LockHeld (exit 4), as for every other job. Which release a
  ref names needs a fetch; that fetch is not journaled, so a daemon killed in it finds the
  prepared candidate as it was (an interrupted job would make it stop it).
- `deploy --build-only` is a user job like the others (the lock held, journaled as a
  "build", refused while another release is prepared), and done when its release is
  built already or prepared. A fleet runs it on the other hosts while the release host
  runs the release phase; `deploy REF --prepare --no-release-phase` then reuses the build.
- `rollback --prepare` starts no build: its target's warm instance, if it runs, is taken
  over as the candidate (prepare.py), else a new one starts with the settings the release
  ran with. Without RELEASE the target is plain rollback's, which moves once a host has
  switched: a coordinator that may run again names RELEASE.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING

from relman.journal import JournalEntry
from relman.releases.ids import make_release_id
from relman.results import BuildResult, PrepareResult
from relman.transaction import prepare
from relman.transaction.jobs import Report

if TYPE_CHECKING:
    from relman.releases import Manifest
    from relman.transaction.app import App

Schedule = Callable[[str, Callable[[Report], Awaitable[object]], float], None]


async def deploy_job(app: App, ref: str, who: str, report: Report,
                     args: Mapping[str, object], schedule: Schedule
                     ) -> PrepareResult | BuildResult:
    """The daemon's `deploy REF --prepare` or `deploy REF --build-only` (*args*)."""
    if args.get("build_only"):
        return await build_only(app, ref, who, report)
    release_phase = not args.get("no_release_phase")
    prepared = await _prepared_already(app, ref, "deploy --prepare", report,
                                       release_phase=release_phase)
    if prepared is None:
        try:
            prepared = await prepare.prepare(app, ref, who, report,
                                             release_phase=release_phase)
        except prepare.LiveAlready as live:
            return _live(live.manifest, ref, report)
        _expire_at_deadline(app, prepared, schedule)
    return _answer(app, prepared, ref)


async def rollback_job(app: App, release: str | None, who: str, report: Report,
                       schedule: Schedule) -> PrepareResult:
    """The daemon's `rollback [RELEASE] --prepare`."""
    manifest = app.rollback_target(release)
    prepared = await _same_prepared(app, manifest.id, "rollback --prepare", report)
    if prepared is None:
        if app.live_release() == manifest.id:
            return _live(manifest, manifest.ref, report)
        prepared = await prepare.prepare_rollback(app, manifest, who, report)
        _expire_at_deadline(app, prepared, schedule)
    return _answer(app, prepared, manifest.ref)


async def build_only(app: App, ref: str, who: str, report: Report) -> BuildResult:
    """`deploy REF --build-only`: *ref* fetched and built into its release; no release
    phase, nothing started or switched."""
    prepared = await _prepared_already(app, ref, "deploy --build-only", report)
    if prepared is not None:  # built, and more
        return BuildResult(release=prepared.release, sha=prepared.sha, ref=ref)
    app.jobs.begin(JournalEntry(job="build", ref=ref, who=who))
    try:
        manifest = await app.fetch_and_build(ref, who, report, release_phase=False)
    except BaseException as e:
        app.jobs.failed(e, report)
        raise
    app.store.record("built", release=manifest.id, sha=manifest.sha, ref=ref, who=who)
    app.jobs.end()
    report("built", f"{manifest.id} is built; nothing was started")
    return BuildResult(release=manifest.id, sha=manifest.sha, ref=ref)


async def _prepared_already(app: App, ref: str, command: str, report: Report, *,
                            release_phase: bool = False) -> prepare.Prepared | None:
    """While a candidate is prepared: it, when *ref* names its release (fetched first);
    LockHeld when *ref* names another. None when nothing is prepared (any more)."""
    if app.prepared is None:
        return None
    await app.store.fetch(lambda line: report("fetch", line))
    commit = await app.store.resolve(ref)
    return await _same_prepared(app, make_release_id(commit.time, commit.sha), command,
                                report, release_phase=release_phase)


async def _same_prepared(app: App, release: str, command: str, report: Report, *,
                         release_phase: bool = False) -> prepare.Prepared | None:
    """The prepared candidate when it is *release*'s and runs (and, asked for
    *release_phase*, had its release phase); LockHeld when another release is prepared;
    None when none is (a candidate that has exited, or one prepared with
    --no-release-phase when the release phase is asked for now, is aborted)."""
    prepared = app.prepared
    if prepared is None:
        return None
    if prepared.release != release:
        prepare.refuse_while_prepared(app, f"{command} {release}")
    why = ("has exited" if not prepared.candidate.alive else
           "was prepared without the release phase" if release_phase
           and not prepared.release_phase else "")
    if why:
        report("prepared", f"{prepared.candidate.instance} {why}: preparing again")
        await prepare.abort(app, release, f"relman ({command}: its candidate {why})")
        return None
    report("prepared", f"{release} is prepared already on next.sock "
           f"({prepared.candidate.instance}); its deadline is unchanged")
    return prepared


def _live(manifest: Manifest, ref: str, report: Report) -> PrepareResult:
    report("live", f"{manifest.id} is live already: nothing to prepare")
    return PrepareResult(release=manifest.id, sha=manifest.sha, ref=ref, prepared_until=0.0,
                         live=True)


def _answer(app: App, prepared: prepare.Prepared, ref: str) -> PrepareResult:
    return PrepareResult(release=prepared.release, sha=prepared.sha, ref=ref,
                         prepared_until=round(prepared.deadline, 3),
                         expires_in=round(max(0.0, prepared.deadline - app.clock()), 1))


def _expire_at_deadline(app: App, prepared: prepare.Prepared, schedule: Schedule) -> None:
    """The one timer of *prepared*'s deadline (swap.prepare_timeout)."""
    schedule(f"abort {prepared.release}", lambda _report: prepare.expire(app, prepared),
             max(0.0, prepared.deadline - app.clock()))

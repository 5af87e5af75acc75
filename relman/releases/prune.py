"""Choose and remove releases and venvs beyond keep_releases (pre-commit's mark-and-sweep gc)."""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

import structlog

from relman.atomic import read_link
from relman.releases.ids import is_release_id
from relman.releases.layout import AppRoot
from relman.releases.registry import Manifest, ReleaseState, release_order
from relman.results import PruneResult

log = structlog.get_logger(__name__)


def choose_prunable(
    releases: Sequence[Manifest],
    *,
    keep: int,
    live: str | None,
    target: str | None,
    running: frozenset[str],
) -> frozenset[str]:
    """Ids to remove: all but the newest *keep* built releases, never live, target or running.

    Failed and unfinished releases never count toward *keep* (Deployer #814, Capistrano #517).
    """
    protected = {live, target} | running
    built = [m.id for m in sorted(releases, key=release_order, reverse=True)
             if m.state is ReleaseState.BUILT]
    kept = set(built[:keep]) | protected
    return frozenset(m.id for m in releases if m.id not in kept)


def choose_prunable_venvs(venv_names: Sequence[str], kept: Sequence[Manifest], *,
                          unlisted: Mapping[str, str | None] | None = None) -> frozenset[str]:
    """Venv directory names no kept release references.

    *unlisted* maps each release tree that has no readable manifest (never pruned) to its
    .venv link's target: that venv is referenced. One without a link could use any venv,
    so then none is prunable.
    """
    links = (unlisted or {}).values()
    if None in links:
        return frozenset()
    referenced = {Path(m.venv).name for m in kept if m.venv}
    referenced |= {Path(link).name for link in links if link}
    return frozenset(n for n in venv_names if n not in referenced)


def unlisted_releases(root: AppRoot, manifests: Sequence[Manifest]) -> dict[str, str | None]:
    """Release trees with no readable manifest (lost, unreadable, set aside), each with its
    .venv link's target: prune never removes them, nor the venv they use."""
    listed = {m.id for m in manifests}
    found = {}
    if root.releases.is_dir():
        for path in root.releases.iterdir():
            if is_release_id(path.name) and path.name not in listed and path.is_dir():
                found[path.name] = read_link(path / ".venv")
    return found


def prune(
    root: AppRoot,
    manifests: Sequence[Manifest],
    *,
    keep: int,
    live: str | None,
    target: str | None,
    running: frozenset[str],
) -> PruneResult:
    """Remove what choose_prunable() picks; the caller holds the deploy lock. A release tree
    without a readable manifest is never removed (it is not in *manifests*)."""
    doomed = choose_prunable(manifests, keep=keep, live=live, target=target, running=running)
    removed = []
    for rid in sorted(doomed):
        # The manifest goes last: a crash or an error mid-removal leaves a release that is
        # listed and pruned again, never an unlisted directory.
        shutil.rmtree(root.release_dir(rid), ignore_errors=True)
        if root.release_dir(rid).exists():
            continue
        for log_file in root.log.glob(f"{rid}.*"):  # <id>.log, its rotations, <id>.build.log
            log_file.unlink(missing_ok=True)
        root.tree_index(rid).unlink(missing_ok=True)
        root.manifest(rid).unlink(missing_ok=True)
        removed.append(rid)
    kept = [m for m in manifests if m.id not in removed]
    names = [p.name for p in root.venvs.iterdir() if p.is_dir()] if root.venvs.is_dir() else []
    unlisted = unlisted_releases(root, manifests)
    if unlisted:
        log.warning("prune.unlisted_releases_kept", releases=sorted(unlisted),
                    all_venvs_kept=None in unlisted.values())
    dead_venvs = choose_prunable_venvs(names, kept, unlisted=unlisted)
    for name in sorted(dead_venvs):
        shutil.rmtree(root.venvs / name, ignore_errors=True)
    return PruneResult(releases=tuple(removed), venvs=tuple(sorted(dead_venvs)))

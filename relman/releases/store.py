"""ReleaseStore: the steps that turn a ref into a built release, each recorded in its manifest."""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from relman.atomic import create_once, read_link, set_aside
from relman.config import Config
from relman.envfile import read_env_file
from relman.errors import DeployFailed, NotRunning, StateWriteFailed, UnknownRelease, writing
from relman.releases import history, registry, static
from relman.releases.commands import OnLine, clean_env
from relman.releases.ids import is_release_id, make_release_id
from relman.releases.layout import AppRoot
from relman.releases.registry import Manifest, ReleaseState
from relman.settings import (
    Settings,
    settings_diff,
    settings_from_json,
    settings_of,
    settings_to_json,
)

if TYPE_CHECKING:
    from relman.releases import git, linking

# build, git (with untar: tarfile, bz2, lzma) and venvs (hashlib: libcrypto) serve deploys
# only: imported where a deploy needs them, so the idle daemon does not carry them (issue 11).

log = structlog.get_logger(__name__)
KEY_BYTES = 32


class ReleaseStore:
    """The release store of one app root."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.root = AppRoot(config.app.root)
        # Set for the duration of a job: marks every build process (and its descendants) so
        # that a restarted daemon can find what an interrupted job left running.
        self.job_env: dict[str, str] = {}
        # build.python, and its identity being found out (probe_interpreter)
        self._interpreter: tuple[str, asyncio.Future[tuple[str, str]]] | None = None
        # Manifests as last read, by file identity: status reads them all (rollback target).
        self._manifests: registry.ManifestCache = {}
        # The release the last export wrote, and what it linked from the live release.
        self._exported: tuple[str, linking.Exported] | None = None

    def manifests(self) -> list[Manifest]:
        return registry.load_all(self.root, self._manifests)

    def get(self, release_id: str) -> Manifest:
        """The manifest of *release_id*, or UnknownRelease."""
        found = self._load(release_id) if is_release_id(release_id) else None
        if found is None and is_release_id(release_id) and \
                self.root.release_dir(release_id).is_dir():
            raise UnknownRelease(f"release {release_id}: its manifest is missing or unreadable")
        if found is None:
            raise UnknownRelease(f"release {release_id!r}: no such release")
        return found

    def _load(self, release_id: str) -> Manifest | None:
        """registry.load(), an unreadable manifest set aside and counted as missing."""
        try:
            return registry.load(self.root, release_id)
        except registry.Unreadable as e:
            self.set_aside(e.path, e.reason)
            return None

    def set_aside(self, path: Path, reason: str) -> None:
        """Set *path* aside as unreadable (atomic.set_aside), and say so in the history."""
        try:
            moved = set_aside(path, reason=reason)
        except FileNotFoundError:  # another reader (`relman logs ID`) was first
            return
        self.record("state_set_aside", file=str(path.relative_to(self.root.root)),
                    to=moved.name, reason=reason)

    def set_aside_unreadable(self) -> list[str]:
        """Set aside every release manifest that cannot be read; their release ids."""
        found = registry.find_unreadable(self.root)
        for unreadable in found:
            self.set_aside(unreadable.path, unreadable.reason)
        return [unreadable.path.stem for unreadable in found]

    def live_manifest(self) -> Manifest:
        """The manifest of the release `current` points at. One that is missing or
        unreadable is rebuilt from the release tree: that release serves, or must."""
        live = self.live_id()
        if live is None:
            raise NotRunning("nothing is deployed yet: run `relman deploy REF` first")
        found = self._load(live) if is_release_id(live) else None
        return found if found is not None else self._rebuild(live)

    def _rebuild(self, release_id: str) -> Manifest:
        """A minimal manifest for the live release from its tree and its .venv link. It
        counts as known-good: `current` only ever names a release that passed its gate."""
        rdir = self.root.release_dir(release_id)
        from relman.releases import venvs

        venv = read_link(rdir / ".venv")
        why = (f"there is no release tree releases/{release_id}"
               if not is_release_id(release_id) or not rdir.is_dir()
               else "it has no .venv link" if venv is None
               else venvs.health_check(rdir / venv))
        if venv is None or why is not None:
            raise NotRunning(f"release {release_id}: its manifest is missing or unreadable "
                             f"and cannot be rebuilt: {why}",
                             hint="deploy a ref, or roll back to a named release")
        # The short sha of the release id: asking the mirror for the full one would run git
        # synchronously in the daemon's event loop, for a field nothing relies on.
        sha = release_id.split("-", 1)[1]
        manifest = self.save(Manifest(
            id=release_id, ref="", sha=sha, who="relman (manifest rebuilt)",
            created=rdir.stat().st_mtime, state=ReleaseState.BUILT, known_good=True,
            venv=str(rdir / venv), last_live=time.time()))
        log.warning("manifest.rebuilt", release=release_id, venv=manifest.venv)
        self.record("manifest_rebuilt", release=release_id, venv=manifest.venv)
        return manifest

    def live_id(self) -> str | None:
        """The release `current` points at, or None before the first deploy."""
        return self.root.current_release()

    def rollback_target(self) -> Manifest | None:
        return registry.rollback_target(self.manifests(), self.live_id())

    def save(self, manifest: Manifest) -> Manifest:
        registry.save(self.root, manifest)
        return manifest

    def record(self, event: str, **fields: object) -> None:
        """Append to the history. A refused append (a full disk) is a warning only: the
        history is for people, and supervision (crash restarts, rollbacks) must go on."""
        try:
            with writing(self.root.history):
                history.record(self.root.history, event, app=self.config.app.name, **fields)
        except StateWriteFailed as e:
            log.warning("history.write_failed", event_name=event, error=e.message)


    def app_env(self) -> dict[str, str]:
        """server.env and server.env_file over the daemon's clean environment."""
        env = clean_env()
        env.update(self.config.server.env)
        if self.config.server.env_file:
            env.update(read_env_file(self.root.shared / self.config.server.env_file))
        return env

    def build_env(self) -> dict[str, str]:
        """app_env() plus the job marker: for git, installers, build and release commands."""
        return {**self.app_env(), **self.job_env}

    def probe_interpreter(self) -> None:
        """Start finding out build.python's identity (a process start, ~0.1 s) now, so that
        it overlaps the fetch; build() awaits it."""
        from relman.releases import venvs

        self.discard_probe()
        python = self.config.build.python
        task = asyncio.ensure_future(venvs.interpreter_identity(python))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())  # seen, if unused
        self._interpreter = (python, task)

    def discard_probe(self) -> None:
        """Forget an unused probe (the job ends, or reused a built release)."""
        if self._interpreter is not None:
            self._interpreter[1].cancel()
            self._interpreter = None

    async def fetch(self, on_line: OnLine | None = None) -> None:
        from relman.releases import git

        await git.fetch_mirror(
            self.config.app.repo, self.root.repo, self.root.log / "fetch.log", on_line,
            extra_env=self.job_env,
        )

    async def resolve(self, ref: str) -> git.Commit:
        from relman.releases import git

        return await git.resolve_ref(self.root.repo, ref)

    def begin(self, commit: git.Commit, ref: str, who: str) -> Manifest:
        """The manifest for *commit*: an existing built release is reused as it is."""
        from relman.releases import venvs

        rid = make_release_id(commit.time, commit.sha)
        # A live release whose manifest was lost is rebuilt, never exported again under it.
        existing = self.live_manifest() if rid == self.live_id() else self._load(rid)
        if existing and existing.state is ReleaseState.BUILT and existing.venv and \
                venvs.health_check(Path(existing.venv)) is None:
            return existing
        if existing and rid == self.live_id():  # its tree and venv serve: never rebuilt in place
            raise DeployFailed(f"release {rid} is live but {existing.state}: it cannot be "
                               "rebuilt under its running server; deploy another ref first")
        manifest = Manifest(id=rid, ref=ref, sha=commit.sha, who=who, created=time.time())
        if existing:
            manifest = registry.advance(
                replace(existing, ref=ref, who=who, error=""),
                ReleaseState.UNFINISHED,
            )
        return self.save(manifest)

    async def export(self, manifest: Manifest, on_line: OnLine | None = None) -> Manifest:
        """Write the release's tree: with build.link_unchanged, the files unchanged since
        the live release hard-linked from it (relman.releases.linking says when that is
        safe), else all of it from git archive. Records what it wrote for the next one."""
        from relman.releases import linking

        self.root.build_log(manifest.id).unlink(missing_ok=True)
        self.root.tree_index(manifest.id).unlink(missing_ok=True)
        started = time.monotonic()
        live = self.live_id()
        source = None
        if self.config.build.link_unchanged and live is not None and live != manifest.id:
            index = await asyncio.to_thread(linking.load_index, self.root.tree_index(live))
            if index is not None:
                source = linking.Source(self.root.release_dir(live), index)
        self._exported = None
        exported = await asyncio.to_thread(
            linking.export, self.root.repo, manifest.sha, self.root.release_dir(manifest.id),
            source)
        self._exported = (manifest.id, exported)
        await asyncio.to_thread(linking.save_index, self.root.tree_index(manifest.id),
                                exported.index)
        files, linked = len(exported.index.files), len(exported.linked)
        log.info("release.exported", release=manifest.id, files=files, linked=linked,
                 linked_from=live if linked else None)
        if on_line and linked:
            on_line(f"{files - linked} of {files} files written, {linked} unchanged ones "
                    f"hard-linked from {live}")
        timings = {**manifest.timings, "export": round(time.monotonic() - started, 3)}
        return self.save(replace(manifest, timings=timings))

    async def check_linked(self, manifest: Manifest, on_line: OnLine | None = None) -> None:
        """After a build or release step: the linked files it wrote in place (into both
        releases) get a fresh copy in the release they came from."""
        from relman.releases import linking

        if self._exported is None or self._exported[0] != manifest.id:
            return  # a release built by an earlier job (reused): nothing linked now
        exported = self._exported[1]
        if not exported.linked or exported.source is None:
            return
        rdir = self.root.release_dir(manifest.id)
        changed = await asyncio.to_thread(linking.written_through, exported, rdir)
        repaired = await asyncio.to_thread(linking.repair_source, self.root.repo, exported,
                                           changed)
        if repaired:
            source = exported.source.directory.name
            log.warning("release.shared_file_written", release=manifest.id, source=source,
                        paths=repaired[:20], count=len(repaired))
            if on_line:
                on_line(f"{len(repaired)} file(s) shared with {source} were written in place "
                        f"({', '.join(repaired[:3])}): {source} got fresh copies")
            # static/ may publish the written inode as the live release's: its copy now.
            try:  # (a failed build has no swap to publish again)
                await asyncio.to_thread(self.publish_static, self.live_id())
            except (OSError, StateWriteFailed) as e:
                log.warning("static.republish_failed", error=str(e))

    async def build(self, manifest: Manifest, on_line: OnLine | None = None) -> Manifest:
        """Venv (reused when its inputs match), shared links, build.commands."""
        from relman.releases import build, venvs

        cfg = self.config.build
        rdir = self.root.release_dir(manifest.id)
        logfile = self.root.build_log(manifest.id)
        env = self.build_env()
        started = time.monotonic()
        probe, self._interpreter = self._interpreter, None
        if probe is not None and probe[0] == cfg.python:  # not changed by a reload meanwhile
            interpreter = await probe[1]
        else:
            interpreter = await venvs.interpreter_identity(cfg.python)
        venv = await venvs.ensure_venv(
            self.root.venvs, interpreter=interpreter, release_dir=rdir,
            requirements=cfg.requirements, log_path=logfile, env=env, on_line=on_line,
            installer=cfg.installer,
        )
        if on_line:
            how = "reused" if venv.reused else f"built with {venv.backend}"
            on_line(f"virtualenv {venv.path.name} {how} in {venv.seconds:.1f}s")
        link = rdir / ".venv"
        link.unlink(missing_ok=True)
        os.symlink(venv.path, link)
        build.link_shared(rdir, self.root.shared, cfg.shared)
        try:
            await build.run_commands(
                cfg.commands, phase="build", release_dir=rdir,
                env=build.venv_env(env, venv.path), log_path=logfile, on_line=on_line,
            )
        finally:
            await self.check_linked(manifest, on_line)
        timings = {**manifest.timings, "venv": round(venv.seconds, 3),
                   "build": round(time.monotonic() - started, 3)}
        return self.save(replace(manifest, deps_hash=venv.hash, venv=str(venv.path),
                                 timings=timings))

    async def release_phase(self, manifest: Manifest, on_line: OnLine | None = None) -> None:
        """release.commands (migrations): once per deploy, before the switch."""
        from relman.releases import build

        try:
            await build.run_commands(
                self.config.release.commands, phase="release",
                release_dir=self.root.release_dir(manifest.id),
                env=build.venv_env(self.build_env(), Path(manifest.venv)),
                log_path=self.root.build_log(manifest.id), on_line=on_line,
            )
        finally:
            await self.check_linked(manifest, on_line)

    def mark(self, manifest: Manifest, state: ReleaseState, **changes: object) -> Manifest:
        current = self._load(manifest.id) or manifest
        return self.save(registry.advance(current, state, **changes))

    def settings_key(self) -> bytes:
        """The key of the env value hashes in manifests (state/settings.key, 0600), made
        once. An unreadable one is set aside and replaced: the env values of releases
        recorded under it then show as changed in diffs, never wrongly as equal."""
        path = self.root.settings_key
        key = b""
        try:
            key = path.read_bytes()
        except FileNotFoundError:
            pass
        except IsADirectoryError:
            self.set_aside(path, "a directory")
        else:
            if len(key) != KEY_BYTES:
                self.set_aside(path, f"{len(key)} bytes, not {KEY_BYTES}")
                key = b""
        if not key:
            key = create_once(path, os.urandom(KEY_BYTES), 0o600)
        return key

    def settings(self, manifest: Manifest) -> Settings:
        """The settings *manifest*'s release runs with: those it recorded, else (a manifest
        from before they were recorded, or settings that cannot be read) the config's."""
        if manifest.settings:
            try:
                return settings_from_json(manifest.settings, self.config)
            except ValueError as e:
                log.warning("settings.unreadable", release=manifest.id, error=str(e))
        return settings_of(self.config)

    def record_settings(self, manifest: Manifest, config: Config | None = None, *,
                        settings: Settings | None = None) -> tuple[Manifest, list[str]]:
        """Record *settings* (default: *config*'s, or the store's) in *manifest*, saved; the
        new manifest and what changed from the settings it had (nothing for a first
        record)."""
        new = settings_to_json(settings or settings_of(config or self.config),
                               self.settings_key())
        current = self._load(manifest.id) or manifest
        if current.settings == new:
            return current, []
        changes = settings_diff(current.settings, new) if current.settings else []
        return self.save(replace(current, settings=new)), changes

    def publish_static(self, winner: str | None) -> static.Published:
        """Publish the [static] files of every release the store keeps into static/,
        *winner*'s (the release going live, or live) first; each release's [static] is
        the one it recorded (releases/static.py)."""
        chosen, skipped = [], []
        for manifest in static.publication_order(self.manifests(), winner):
            files, links = static.release_files(self.root.release_dir(manifest.id),
                                                self.settings(manifest).static, manifest.id)
            chosen.append(files)
            skipped += links
        with writing(self.root.static):  # a full disk: StateWriteFailed
            result = static.publish(self.root.static, static.choose_published(chosen))
        result = replace(result, skipped=tuple(skipped))
        if skipped:
            log.warning("static.links_skipped", links=skipped[:20], count=len(skipped))
        if result.linked or result.copied or result.removed:
            log.info("static.published", winner=winner, linked=result.linked,
                     copied=result.copied, unchanged=result.unchanged, removed=result.removed)
        return result

    def mark_live(self, release_id: str, *, known_good: bool) -> None:
        current = self._load(release_id)
        if current is not None:
            self.save(replace(current, known_good=current.known_good or known_good,
                              last_live=time.time()))

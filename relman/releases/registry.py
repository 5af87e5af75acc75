"""The registry: one manifest per release (state, known-good flag, timings) and the rollback
target choice."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

from relman.atomic import write_json_atomic
from relman.releases.ids import is_release_id
from relman.releases.layout import AppRoot


class ReleaseState(StrEnum):
    UNFINISHED = "unfinished"  # being fetched or built: never counted, never a target
    BUILT = "built"            # tree, venv, build and release phase done
    FAILED = "failed"          # build, release phase or health gate failed


ALLOWED: Final[Mapping[ReleaseState, frozenset[ReleaseState]]] = {
    ReleaseState.UNFINISHED: frozenset({ReleaseState.BUILT, ReleaseState.FAILED}),
    ReleaseState.BUILT: frozenset({ReleaseState.FAILED, ReleaseState.UNFINISHED}),
    ReleaseState.FAILED: frozenset({ReleaseState.UNFINISHED}),
}


class IllegalTransition(Exception):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class Manifest:
    id: str
    ref: str
    sha: str
    who: str
    created: float
    state: ReleaseState = ReleaseState.UNFINISHED
    known_good: bool = False  # served as the live release and passed its live check
    deps_hash: str = ""
    venv: str = ""
    timings: Mapping[str, float] = field(default_factory=dict)
    error: str = ""
    # When it last went live (wall clock): every verified switch to it sets it, deploys,
    # rollbacks and automatic rollbacks alike. The rollback target follows this order.
    last_live: float = 0.0
    # The settings the release runs with (relman.settings.settings_to_json(): plain JSON,
    # env values as hashes); {} for a manifest from before releases recorded them.
    settings: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        # Not dataclasses.asdict(): it deep-copies the settings, and was two thirds of
        # `relman releases` with 500 releases (bench/scale.py). Every value is plain JSON.
        data = {name: getattr(self, name) for name in self.__dataclass_fields__}
        data["state"] = str(self.state)
        data["timings"] = dict(self.timings)
        data["settings"] = dict(self.settings)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Manifest:
        if not isinstance(data, Mapping):
            raise TypeError("a manifest is a JSON object")
        known = set(cls.__dataclass_fields__)
        fields = {k: v for k, v in data.items() if k in known}
        fields["state"] = ReleaseState(fields.get("state", "unfinished"))
        # Settings that are not an object are no reason to lose the release: it runs with
        # the config's, as one from before settings were recorded does (ReleaseStore.settings).
        if not isinstance(fields.get("settings", {}), Mapping):
            del fields["settings"]
        return cls(**fields)


def advance(manifest: Manifest, to: ReleaseState, **changes: Any) -> Manifest:
    """The one path for a state change; raises IllegalTransition on a bug."""
    if to != manifest.state and to not in ALLOWED[manifest.state]:
        raise IllegalTransition(f"release {manifest.id}: {manifest.state} -> {to}")
    return replace(manifest, state=to, **changes)


def save(root: AppRoot, manifest: Manifest) -> None:
    write_json_atomic(root.manifest(manifest.id), manifest.to_json())


class Unreadable(Exception):
    """A release manifest that exists but cannot be read as one (cut short by a crash, not
    JSON, another release's, a directory): set aside by the caller, never a reason to stop."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


def _read(path: Path, release_id: str) -> Manifest:
    """The manifest at *path*; FileNotFoundError, Unreadable, or another OSError."""
    try:
        manifest = Manifest.from_json(json.loads(path.read_text()))
    except IsADirectoryError:
        raise Unreadable(path, "a directory") from None
    except (ValueError, TypeError) as e:  # UnicodeDecodeError and JSONDecodeError included
        raise Unreadable(path, str(e) or type(e).__name__) from None
    # Trust the file name, not the id inside: an id of "" would make release_dir() the
    # releases/ directory itself, and prune would remove every release.
    if manifest.id != release_id:
        raise Unreadable(path, f"it is the manifest of {manifest.id!r}")
    return manifest


def load(root: AppRoot, release_id: str) -> Manifest | None:
    """The manifest of *release_id*, None if there is none; Unreadable if it cannot be read."""
    try:
        return _read(root.manifest(release_id), release_id)
    except FileNotFoundError:
        return None


def _manifest_files(root: AppRoot) -> Iterator[Path]:
    return (p for p in root.manifests.glob("*.json") if is_release_id(p.stem))


# release id -> (inode, size, mtime_ns) of the manifest file when read, and what it held
ManifestCache = dict[str, tuple[tuple[int, int, int], Manifest]]


def load_all(root: AppRoot, cache: ManifestCache | None = None) -> list[Manifest]:
    """Every readable manifest, oldest release first; other files are ignored.

    One odd name must not stop the listing (it disabled all of Capistrano's cleanup, #1883).
    With a *cache* (the daemon's), a file whose inode, size and mtime are those it had when
    read is not read again: every write replaces the file (a new inode), and `relman status`
    with 500 releases read 500 manifests per call (bench/scale.py).
    """
    if cache is None:
        found = []
        for path in _manifest_files(root):
            try:
                found.append(_read(path, path.stem))
            except (OSError, Unreadable):
                continue
        return sorted(found, key=release_order)
    try:
        entries = list(os.scandir(root.manifests))
    except FileNotFoundError:
        entries = []
    fresh: ManifestCache = {}
    for entry in entries:
        release_id = entry.name.removesuffix(".json")
        if release_id == entry.name or not is_release_id(release_id):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
            key = (st.st_ino, st.st_size, st.st_mtime_ns)
            hit = cache.get(release_id)
            fresh[release_id] = hit if hit is not None and hit[0] == key else \
                (key, _read(Path(entry.path), release_id))
        except (OSError, Unreadable):
            continue
    cache.clear()
    cache.update(fresh)
    return sorted((m for _key, m in fresh.values()), key=release_order)


def find_unreadable(root: AppRoot) -> list[Unreadable]:
    """The release manifests load_all() skips because they cannot be read."""
    found = []
    for path in _manifest_files(root):
        try:
            _read(path, path.stem)
        except Unreadable as e:
            found.append(e)
        except OSError:
            continue
    return found


def release_order(manifest: Manifest) -> tuple[str, float]:
    """Commit time first (the id's timestamp), then first deploy: commits made within one
    second (a rebase) still sort in the order they were deployed."""
    return manifest.id.split("-", 1)[0], manifest.created


def rollback_target(manifests: Iterable[Manifest], live: str | None) -> Manifest | None:
    """The release that was live before *live*: of the known-good built releases other than
    *live*, the one that last went live (last_live), whatever its id or mtime; so a second
    rollback rolls forward again, as Heroku's does. Never a failed or unfinished release,
    nor one that never went live (known_good is set when it does), nor "the previous
    directory by mtime" (Capistrano, shipit-deploy #22). A manifest that never recorded
    last_live (0) ranks below those that did, in release order."""
    candidates = [m for m in manifests
                  if m.id != live and m.state is ReleaseState.BUILT and m.known_good]
    return max(candidates, key=lambda m: (m.last_live, release_order(m)), default=None)

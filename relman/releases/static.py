"""Published static files: <root>/static/<name>/ holds the union of the kept releases'
[static] files, so that a page rendered by an older release still finds its assets after a
swap (DESIGN sections 3 and 4; Kamal's asset bridging).

How a publication goes (publish()), and why:

- What should be there is a pure function of the releases, in priority order
  (choose_published()): the first release that has a path wins it. The release going live
  comes first, then the others by when they last went live, newest first. So when two
  releases have one path with different content (a non-hashed `app.css`), the release that
  is going live wins, and a page of an older release gets the newer file under that name:
  only hashed names (`app.3f2a9c1b.css`, as Django's ManifestStaticFilesStorage, webpack
  and Vite write them) are safe across a swap.
- Each file is put in place by a link (or copy) under a staging name in static/.tmp/, made
  world-readable there, and os.replace()d over its final name: a reader sees the old file
  or the new one, never none. Files are added before any is removed, so no file that a
  kept release has is ever missing, at any moment, even if the daemon is killed mid-way.
- Hard links when the release tree and static/ are on one file system (the usual case:
  both are under the app root); a copy otherwise (EXDEV), or when the link is refused
  (EPERM from fs.protected_hardlinks, EMLINK). A hard link shares the release file's inode,
  so making it readable makes the release's file readable too: static files are public by
  definition (nginx's workers, as www-data, must read them).
- A file already in place is left alone: the same inode as its source, or, for a copy,
  the same content. A second publication of the same releases changes nothing, which is
  what makes a redeploy, or a publication cut short and run again, safe.
- Then what no release has any more goes, with the directories left empty, and the
  staging directory with whatever a killed publication left in it.

Only regular files are published: a symbolic link inside a [static] directory, or a
[static] directory that is a link or is reached through one (a build.shared entry), is
skipped, so nothing outside the release tree (shared/.env) can ever be served.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import structlog

from relman.releases.registry import Manifest, ReleaseState
from relman.static_urls import static_name

log = structlog.get_logger(__name__)

STAGING: Final = ".tmp"  # no [static] name can start with "." (relman.static_urls)
READABLE: Final = 0o044  # group and others may read: nginx's workers are another user
DIR_MODE: Final = 0o755
# A link refused for these reasons is worth a copy; any other error is the file system's.
_COPY_INSTEAD: Final = frozenset({errno.EXDEV, errno.EPERM, errno.EMLINK})


@dataclass(frozen=True, slots=True)
class Published:
    """What one publication did, in file counts."""

    linked: int = 0
    copied: int = 0
    unchanged: int = 0
    removed: int = 0
    skipped: tuple[str, ...] = ()  # symbolic links not followed, as release:path


def publication_order(manifests: Sequence[Manifest], winner: str | None) -> list[Manifest]:
    """The releases whose files are published, highest priority first: *winner* (the
    release going live, or live), then the others by when they last went live, newest
    first, then by id. An unfinished release (being built, or abandoned mid-build) has no
    files to offer yet, and a failed one that never went live never rendered a page."""
    def offers(m: Manifest) -> bool:
        return m.state is ReleaseState.BUILT or (m.state is ReleaseState.FAILED
                                                 and m.last_live > 0)
    others = sorted((m for m in manifests if m.id != winner and offers(m)),
                    key=lambda m: (m.last_live, m.id), reverse=True)
    return [m for m in manifests if m.id == winner] + others


def _parents(path: str) -> Iterator[str]:
    """"a/b/c.css" -> "a", "a/b"."""
    parts = path.split("/")
    for i in range(1, len(parts)):
        yield "/".join(parts[:i])


def choose_published(releases: Iterable[Mapping[str, Path]]) -> dict[str, Path]:
    """The files to publish ("name/path" -> source file) from each release's files, in
    priority order: the first release that has a path wins it. A path that would be a
    file under another's file, or a file where another has a directory, loses to the
    one that came first."""
    chosen: dict[str, Path] = {}
    dirs: set[str] = set()
    for files in releases:
        for rel, source in files.items():
            parents = list(_parents(rel))
            if rel in chosen or rel in dirs or any(p in chosen for p in parents):
                continue
            chosen[rel] = source
            dirs.update(parents)
    return chosen


def _entries(top: str) -> Iterator[os.DirEntry[str]]:
    """Every entry below *top* (nothing if it is missing), without following links; one
    getdents per directory and no stat: DirEntry knows each entry's type."""
    stack = [top]
    while stack:
        try:
            listing = os.scandir(stack.pop())
        except (FileNotFoundError, NotADirectoryError):
            continue
        with listing:
            for entry in listing:
                yield entry
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)


def _through_link(release_dir: Path, top: Path) -> bool:
    """True if *top*, or a directory on the way to it from *release_dir*, is a link."""
    path = release_dir
    for part in top.relative_to(release_dir).parts:
        path = path / part
        if path.is_symlink():
            return True
    return False


def release_files(release_dir: Path, static: Mapping[str, str], release: str = ""
                  ) -> tuple[dict[str, Path], list[str]]:
    """The files of one release tree that its [static] mapping publishes ("name/path" ->
    file), and the symbolic links skipped (release:path)."""
    files: dict[str, Path] = {}
    skipped: list[str] = []
    for prefix, directory in static.items():
        top = release_dir / directory
        if _through_link(release_dir, top):
            skipped.append(f"{release}:{directory}")
            continue
        name, cut = static_name(prefix), len(str(top)) + 1
        for entry in _entries(str(top)):
            if entry.is_symlink():
                skipped.append(f"{release}:{os.path.relpath(entry.path, release_dir)}")
            elif entry.is_file(follow_symlinks=False):
                files.setdefault(f"{name}/{entry.path[cut:]}", Path(entry.path))
    return files, skipped


@dataclass(frozen=True, slots=True)
class _Tree:
    """What static/ holds, read once: each file (or link) with its lstat, and the
    directories; kept up to date as publish() changes it."""

    files: dict[str, os.stat_result]
    dirs: set[str]

    @classmethod
    def scan(cls, static_root: Path) -> _Tree:
        files, dirs, cut = {}, set(), len(str(static_root)) + 1
        for entry in _entries(str(static_root)):
            rel = entry.path[cut:]
            if rel == STAGING or rel.startswith(STAGING + "/"):
                continue
            if entry.is_dir(follow_symlinks=False):
                dirs.add(rel)
            else:
                files[rel] = entry.stat(follow_symlinks=False)
        return cls(files, dirs)

    def forget(self, rel: str) -> None:
        """*rel* and everything below it are gone."""
        self.files.pop(rel, None)
        self.dirs.discard(rel)
        below = rel + "/"
        for gone in [f for f in self.files if f.startswith(below)]:
            del self.files[gone]
        self.dirs.difference_update([d for d in self.dirs if d.startswith(below)])


def published_now(static_root: Path) -> set[str]:
    """The files published under *static_root* ("name/path"), staging excluded."""
    return set(_Tree.scan(static_root).files)


def _same_content(a: Path, b: Path) -> bool:
    with a.open("rb") as fa, b.open("rb") as fb:
        while True:
            chunk = fa.read(1 << 16)
            if chunk != fb.read(1 << 16):
                return False
            if not chunk:
                return True


def _in_place(have: os.stat_result | None, want: os.stat_result, dest: Path,
              source: Path) -> bool:
    """True if the published file *have* (at *dest*) is the source *want*: the same
    inode, or (a copy) a regular file of the same size and content. Size and modification
    time alone would not do: git archive stamps files with the commit time, in seconds, and
    two commits of one second can differ in a file of one size."""
    if have is None or not stat.S_ISREG(have.st_mode):
        return False
    if (have.st_dev, have.st_ino) == (want.st_dev, want.st_ino):
        return True
    return have.st_size == want.st_size and _same_content(dest, source)


def _make_dirs(static_root: Path, tree: _Tree, rel: str) -> None:
    """The directories of *rel* under *static_root*, 0755; a file in the way goes."""
    for parent in _parents(rel):
        if parent in tree.dirs:
            continue
        path = static_root / parent
        if parent in tree.files:
            path.unlink()
            tree.forget(parent)
        path.mkdir()
        os.chmod(path, DIR_MODE)  # mkdir's mode is filtered by the umask
        tree.dirs.add(parent)


def _stage(source: Path, want: os.stat_result, staged: Path) -> bool:
    """*source* at *staged*, a hard link if it can be, readable by all; True if copied."""
    try:
        os.link(source, staged)
        copied = False
    except OSError as e:
        if e.errno not in _COPY_INSTEAD:
            raise
        shutil.copy2(source, staged)  # with the mode and modification time
        copied = True
    if want.st_mode & READABLE != READABLE:
        os.chmod(staged, stat.S_IMODE(want.st_mode) | READABLE)
    return copied


def _put(static_root: Path, staging: Path, tree: _Tree, rel: str, source: Path,
         want: os.stat_result, n: int) -> bool:
    """Publish *source* as *rel*: staged, then os.replace()d; True if copied."""
    _make_dirs(static_root, tree, rel)
    if rel in tree.dirs:  # a lower-priority release's directory, in a clash
        shutil.rmtree(static_root / rel)
        tree.forget(rel)
    staged = staging / str(n)
    staged.unlink(missing_ok=True)  # left by a publication cut short
    copied = _stage(source, want, staged)
    os.replace(staged, static_root / rel)
    return copied


def _make_root(static_root: Path, staging: Path) -> None:
    for path in (static_root, staging):
        if not path.is_dir():
            path.mkdir(parents=True, exist_ok=True)
            os.chmod(path, DIR_MODE)


def publish(static_root: Path, wanted: Mapping[str, Path]) -> Published:
    """Make *static_root* hold exactly *wanted* ("name/path" -> source file): add and
    replace first, remove last (see the module docstring)."""
    staging = static_root / STAGING
    if not wanted and not static_root.is_dir():
        return Published()
    _make_root(static_root, staging)
    tree = _Tree.scan(static_root)
    linked = copied = unchanged = 0
    for n, (rel, source) in enumerate(sorted(wanted.items())):
        want = os.stat(source)
        if _in_place(tree.files.get(rel), want, static_root / rel, source):
            unchanged += 1
        elif _put(static_root, staging, tree, rel, source, want, n):
            copied += 1
        else:
            linked += 1
    stale = [rel for rel in tree.files if rel not in wanted]
    for rel in stale:
        (static_root / rel).unlink(missing_ok=True)
    shutil.rmtree(staging, ignore_errors=True)
    needed = {parent for rel in wanted for parent in _parents(rel)}
    for directory in sorted(tree.dirs - needed, key=len, reverse=True):  # deepest first
        with contextlib.suppress(OSError):  # not empty: something else put a file there
            (static_root / directory).rmdir()
    return Published(linked=linked, copied=copied, unchanged=unchanged, removed=len(stale))

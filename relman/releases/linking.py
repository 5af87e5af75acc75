"""Export a release's tree with the files it shares with the live release hard-linked
from there, as `rsync --link-dest` does: a redeploy costs what changed, not the tree.

Which files may be shared, and why it is safe (build.link_unchanged, on by default):

- git says what is unchanged: a path whose mode and blob id (`git ls-tree -r`) are the same
  in both commits, a regular file (symlinks and submodules are always written afresh).
- Each export records, per file, the inode it wrote and that inode's size, mtime and mode
  (state/releases/<id>.tree). A file of the live release is linked only if its path still
  leads to that very inode, unchanged, through real directories: a file the app or a build
  step wrote in place, chmod-ed, replaced, or that a build.shared link now hides, is
  exported afresh. Nothing is ever linked from outside the release the index describes.
- A build step or release command that writes in place into a linked file writes into both
  releases (one inode). After the build and after the release phase, every linked file is
  checked again; one written that way gets a fresh copy in the live release (git archive of
  its commit, then os.replace), and the new release keeps what its step wrote: each tree
  is its own again, and a rollback target holds exactly its commit's files (a daemon
  killed mid-step: the next one does it from the two indexes, repair_abandoned). Steps that
  write new files or replace files by rename (collectstatic, compileall, `sed -i`) never
  touch the other release. Modes stay what git archive gives (no read-only files): a
  build step that rewrites a tracked file keeps working.
- An app that writes into its own tracked files while it runs writes into the releases
  that share them; the next deploy sees the change and does not link that file again.
- Attributes: git archive applies .gitattributes (export-ignore, export-subst, eol, ident)
  and the mirror's info/attributes. Linking is used only when every .gitattributes blob is
  the same in both commits, none asks for export-subst (its output depends on the commit),
  and the mirror has no info/attributes; otherwise the whole tree is exported.
- A link refused by the file system (another file system, too many links) makes the
  export fall back to writing the whole tree, as does a change to more than half the files.
- Linked files keep the mtime of the export that first wrote them (the commit time of that
  release), where git archive gives every file the new commit's time.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import structlog

from relman.atomic import write_atomic
from relman.releases.git import archive_into, git_bytes

log = structlog.get_logger(__name__)

REGULAR: Final = frozenset({"100644", "100755"})
INDEX_VERSION: Final = 2
# Bytes of paths per `git archive -- PATHS...` call: well under Linux's 128 KiB per argument
# string and 2 MiB in all (execve(2)).
ARGS_BUDGET: Final = 64 * 1024

Tree = Mapping[str, tuple[str, str]]  # path -> (mode, blob id), as `git ls-tree -r` says
# (inode, size, mtime_ns, mode) of a file as an export wrote it. Not ctime: every link and
# unlink of the inode (the next release's export, a prune) changes it.
Identity = tuple[int, int, int, int]


@dataclass(frozen=True, slots=True)
class Entry:
    """One file of a release's index: what git holds and what the export wrote."""

    mode: str
    blob: str
    identity: Identity


@dataclass(frozen=True, slots=True)
class Index:
    """What an export wrote: its commit and, per regular file, an Entry."""

    sha: str
    files: Mapping[str, Entry]


@dataclass(frozen=True, slots=True)
class Source:
    """The release to link from: its tree and its index."""

    directory: Path
    index: Index


@dataclass(frozen=True, slots=True)
class Exported:
    """The result of export(): the paths linked from *source*, and the new release's index."""

    index: Index
    linked: frozenset[str] = frozenset()
    source: Source | None = None


# --- pure decisions --------------------------------------------------------------------------

def parse_ls_tree(out: bytes) -> dict[str, tuple[str, str]]:
    """`git ls-tree -r -z` output -> {path: (mode, object id)}."""
    entries = {}
    for record in out.split(b"\0"):
        if record:
            meta, _, path = record.partition(b"\t")
            mode, _kind, oid = meta.decode().split(" ")
            entries[os.fsdecode(path)] = (mode, oid)
    return entries


def candidates(tree: Tree, index: Index) -> list[str]:
    """Regular files of *tree* with the mode and blob the indexed export wrote."""
    return [path for path, (mode, blob) in tree.items()
            if mode in REGULAR and (entry := index.files.get(path)) is not None
            and (entry.mode, entry.blob) == (mode, blob)]


def choose_linkable(tree: Tree, index: Index, found: Mapping[str, Identity | None]
                    ) -> frozenset[str]:
    """Paths of *tree* that may be hard-linked from the indexed release: same mode and
    blob, and *found* (what is at the path now) still the inode the export wrote,
    unchanged."""
    return frozenset(path for path in candidates(tree, index)
                     if found.get(path) == index.files[path].identity)


def attributes_allow(new: Tree, old: Tree, read_blob: Callable[[str], bytes]) -> bool:
    """True when git archive would give a shared file the same bytes in both commits: the
    same .gitattributes files, none of them asking for export-subst."""
    def attributes(tree: Tree) -> dict[str, tuple[str, str]]:
        return {p: e for p, e in tree.items() if p.rpartition("/")[2] == ".gitattributes"}

    found = attributes(new)
    return found == attributes(old) and not any(
        b"export-subst" in read_blob(blob) for _mode, blob in found.values())


def batches(paths: Iterable[str], budget: int = ARGS_BUDGET) -> list[list[str]]:
    """*paths* split into argument lists of at most *budget* bytes each."""
    out: list[list[str]] = [[]]
    size = 0
    for path in paths:
        cost = len(os.fsencode(path)) + 1
        if out[-1] and size + cost > budget:
            out.append([])
            size = 0
        out[-1].append(path)
        size += cost
    return [batch for batch in out if batch]


# --- the index -------------------------------------------------------------------------------

def save_index(path: Path, index: Index) -> None:
    files = {p: [e.mode, e.blob, *e.identity] for p, e in index.files.items()}
    data = {"version": INDEX_VERSION, "sha": index.sha, "files": files}
    write_atomic(path, json.dumps(data, separators=(",", ":")).encode())


def load_index(path: Path) -> Index | None:
    """The index at *path*; None when there is none or it cannot be read (no linking)."""
    try:
        data = json.loads(path.read_bytes())
        if data.get("version") != INDEX_VERSION:
            return None
        files = {p: Entry(str(m), str(b), (int(i), int(s), int(t), int(o)))
                 for p, (m, b, i, s, t, o) in data["files"].items()}
        return Index(sha=str(data["sha"]), files=files)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as e:
        log.warning("tree_index.unreadable", path=str(path), error=str(e))
        return None


def identities(top: Path, paths: Iterable[str]) -> dict[str, Identity | None]:
    """(inode, size, mtime_ns, mode) of each regular file at *paths* under *top*, reached through
    real directories only (a build.shared symlink on the way gives None)."""
    # Strings, not Paths: pathlib's joins took 40% of an export of 50,000 files.
    base = os.fspath(top)
    real: dict[str, bool] = {"": True}

    def real_dir(rel: str) -> bool:
        if rel not in real:
            try:
                is_dir = stat.S_ISDIR(os.lstat(f"{base}/{rel}").st_mode)
            except OSError:
                is_dir = False
            real[rel] = is_dir and real_dir(rel.rpartition("/")[0])
        return real[rel]

    found: dict[str, Identity | None] = {}
    for path in paths:
        found[path] = None
        if real_dir(path.rpartition("/")[0]):
            try:
                st = os.lstat(f"{base}/{path}")
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                found[path] = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_mode)
    return found


# --- export and repair -----------------------------------------------------------------------

def read_tree(mirror: Path, sha: str) -> dict[str, tuple[str, str]]:
    return parse_ls_tree(git_bytes(mirror, "ls-tree", "-r", "-z", "--full-tree", sha))


def _linkable(mirror: Path, tree: Tree, source: Source) -> frozenset[str]:
    if (mirror / "info" / "attributes").is_file() and (mirror / "info" / "attributes"
                                                          ).stat().st_size:
        return frozenset()
    old = read_tree(mirror, source.index.sha)
    if not attributes_allow(tree, old, lambda blob: git_bytes(mirror, "cat-file", "blob", blob)):
        return frozenset()
    found = identities(source.directory, candidates(tree, source.index))
    linkable = choose_linkable(tree, source.index, found)
    return linkable if 2 * len(linkable) >= len(tree) else frozenset()


def _link_all(source: Path, dest: Path, paths: Sequence[str]) -> bool:
    """Hard-link *paths* from *source* into *dest*; False if the file system refuses one."""
    src, dst = os.fspath(source), os.fspath(dest)
    made: set[str] = {""}
    for path in paths:
        parent = path.rpartition("/")[0]
        if parent not in made:
            os.makedirs(f"{dst}/{parent}", exist_ok=True)  # mode as tar's data filter's
            made.add(parent)
        try:
            os.link(f"{src}/{path}", f"{dst}/{path}", follow_symlinks=False)
        except OSError as e:
            if e.errno in (errno.EXDEV, errno.EMLINK, errno.EPERM, errno.EACCES):
                log.info("release.link_refused", path=path, error=e.strerror)
                return False
            raise
    return True


def export(mirror: Path, sha: str, dest: Path, source: Source | None) -> Exported:
    """Write the tree of *sha* into *dest* (emptied first) as git archive would: files
    unchanged since *source* hard-linked from it, the rest from git archive."""
    tree = read_tree(mirror, sha)
    linkable = _linkable(mirror, tree, source) if source is not None else frozenset()
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(mode=0o755)
    if linkable and source is not None:
        rest = sorted(set(tree) - linkable)
        for batch in batches(rest):
            archive_into(mirror, sha, dest, batch)
        if not _link_all(source.directory, dest, sorted(linkable)):
            linkable = frozenset()
            shutil.rmtree(dest)
            dest.mkdir(mode=0o755)
    if not linkable:
        archive_into(mirror, sha, dest)
    regular = [p for p, (mode, _blob) in tree.items() if mode in REGULAR]
    found = identities(dest, regular)
    files = {p: Entry(tree[p][0], tree[p][1], ident) for p in regular
             if (ident := found[p]) is not None}
    return Exported(Index(sha, files), linkable, source if linkable else None)


def written_through(exported: Exported, dest: Path) -> list[str]:
    """Linked files of *dest* that were written in place (or chmod-ed) since the export:
    still the shared inode, with another size, mtime or mode."""
    now = identities(dest, sorted(exported.linked))
    changed = []
    for path in sorted(exported.linked):
        identity = exported.index.files[path].identity
        found = now[path]
        if found is not None and found[0] == identity[0] and found != identity:
            changed.append(path)
    return changed


def repair_source(mirror: Path, exported: Exported, paths: Sequence[str]) -> list[str]:
    """Give the source release a fresh copy (git archive of its commit) of each of *paths*
    that still is the inode it shares with the new release; the paths repaired."""
    source = exported.source
    if source is None or not paths:
        return []
    shared = [p for p in paths if (found := identities(source.directory, [p])[p]) is not None
              and found[0] == exported.index.files[p].identity[0]]
    scratch = source.directory.with_name(f".{source.directory.name}.repair")
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(mode=0o700)
    try:
        for batch in batches(shared):
            archive_into(mirror, source.index.sha, scratch, batch)
        for path in shared:
            os.replace(scratch / path, source.directory / path)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return shared


def repair_abandoned(mirror: Path, index_path: Path, tree: Path, source_dir: Path,
                     source_index_path: Path) -> list[str]:
    """After a job was cut short (the daemon killed) with *tree* exported (its index at
    *index_path*) and its build or release step maybe mid-way: what check_linked would
    have done at the step's end. The files *tree* shares with the release at *source_dir*
    (the same inode in both indexes) that were written in place since get a fresh copy
    there; the paths repaired."""
    new, old = load_index(index_path), load_index(source_index_path)
    if new is None or old is None:
        return []
    linked = frozenset(path for path, entry in new.files.items()
                       if (was := old.files.get(path)) is not None
                       and was.identity[0] == entry.identity[0])
    exported = Exported(new, linked, Source(source_dir, old))
    return repair_source(mirror, exported, written_through(exported, tree))

"""build.link_unchanged: a new release shares the live one's unchanged files (hard links)
and both trees stay exactly their commits' git archive exports (issue 11, point 8)."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import tempfile
from pathlib import Path

from relman.releases import git as release_git
from relman.releases import linking
from testing.daemon import RELMAN
from testing.git import commit, git, release_version
from testing.needs import need
from testing.unixhttp import http_get
from testing.waiting import wait_until

DATA = {"data/a.txt": "alpha\n", "data/deep/b.txt": "beta\n", "data/deep/c.txt": "gamma\n",
        "tool.sh": "#!/bin/sh\necho tool\n", "gone.txt": "removed in v2\n",
        "flip.txt": "becomes executable in v2\n"}
# Files of the tree that a deploy adds: the venv link.
ADDED = {".venv"}


def add_files(repo: Path) -> None:
    for name, text in DATA.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    (repo / "tool.sh").chmod(0o755)
    os.symlink("data/a.txt", repo / "link-to-a")
    commit(repo, "files", tag="v1b")


def change_files(repo: Path, version: str) -> None:
    """v2: one file changed, one added, one removed, one made executable, one symlink
    retargeted."""
    (repo / "data/deep/c.txt").write_text("gamma, changed\n")
    (repo / "new.txt").write_text("new in v2\n")
    (repo / "gone.txt").unlink()
    (repo / "flip.txt").chmod(0o755)
    (repo / "link-to-a").unlink()
    os.symlink("data/deep/b.txt", repo / "link-to-a")
    release_version(repo, version)


def snapshot(top: Path) -> dict[str, tuple[str, int, bytes]]:
    """{path: (kind, mode, content or link target)} of a tree, deploy additions left out."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in [*dirnames, *filenames]:
            path = Path(dirpath) / name
            rel = str(path.relative_to(top))
            if rel in ADDED:
                continue
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                found[rel] = ("link", 0, os.readlink(path).encode())
            elif stat.S_ISDIR(st.st_mode):
                found[rel] = ("dir", stat.S_IMODE(st.st_mode), b"")
            else:
                found[rel] = ("file", stat.S_IMODE(st.st_mode), path.read_bytes())
    return found


def archive_snapshot(mirror: Path, sha: str) -> dict[str, tuple[str, int, bytes]]:
    """snapshot() of what a plain git archive export of *sha* writes."""
    with tempfile.TemporaryDirectory() as tmp:
        dest = Path(tmp) / "tree"
        asyncio.run(release_git.export_tree(mirror, sha, dest))
        return snapshot(dest)


def releases_by_ref(app) -> dict[str, dict]:
    return {r["ref"]: r for r in app.json("releases")}


def test_unchanged_files_are_linked_and_each_tree_is_its_export(make_app, app_repo):
    """Unchanged files of v2 are v1's inodes; changed, added, re-moded files and symlinks
    are not; both trees are exactly git archive of their commits."""
    add_files(app_repo)
    app = make_app(app={"keep_releases": 1})
    root = Path(app.config.with_suffix(""))
    app.relman("deploy", "v1b", check=True)
    change_files(app_repo, "v2")
    out = app.relman("deploy", "v2", check=True).stdout
    assert "unchanged ones hard-linked from" in out
    by_ref = releases_by_ref(app)
    old, new = (root / "releases" / by_ref[ref]["id"] for ref in ("v1b", "v2"))
    for ref, tree in (("v1b", old), ("v2", new)):
        assert snapshot(tree) == archive_snapshot(root / "repo", by_ref[ref]["sha"]), ref
    for name in ("data/a.txt", "data/deep/b.txt", "tool.sh", "app.py", "requirements.txt"):
        assert (old / name).stat().st_ino == (new / name).stat().st_ino, name
    for name in ("data/deep/c.txt", "flip.txt", "VERSION"):
        assert (old / name).stat().st_ino != (new / name).stat().st_ino, name
    assert http_get(root / "run/app.sock", "/")[1].startswith("sample v2")

    release_version(app_repo, "v3")
    app.relman("deploy", "v3", check=True)
    pruned = by_ref["v1b"]["id"]
    assert not (root / "state/releases" / f"{pruned}.tree").exists(), "prune removes the index"
    assert (root / "state/releases" / f"{releases_by_ref(app)['v3']['id']}.tree").exists()


def test_build_step_writing_a_linked_file_in_place_leaves_the_live_release_intact(
        make_app, app_repo):
    """A build step that appends to (or chmods) a file shared with the live release: the new
    release keeps the change, the live one gets its commit's file back, and rolls back to
    it."""
    add_files(app_repo)
    append = ("grep -q v2 VERSION && echo appended >> data/a.txt && chmod +x data/deep/b.txt "
              "|| true")
    app = make_app(build={"commands": [["sh", "-c", append]]})
    root = Path(app.config.with_suffix(""))
    app.relman("deploy", "v1b", check=True)
    change_files(app_repo, "v2")
    out = app.relman("deploy", "v2", check=True).stdout
    assert "written in place (data/a.txt, data/deep/b.txt)" in out
    by_ref = releases_by_ref(app)
    old, new = (root / "releases" / by_ref[ref]["id"] for ref in ("v1b", "v2"))
    assert (new / "data/a.txt").read_text() == "alpha\nappended\n"
    assert (old / "data/a.txt").read_text() == "alpha\n"
    assert (old / "data/a.txt").stat().st_ino != (new / "data/a.txt").stat().st_ino
    assert stat.S_IMODE((new / "data/deep/b.txt").stat().st_mode) & 0o111
    assert not stat.S_IMODE((old / "data/deep/b.txt").stat().st_mode) & 0o111
    assert snapshot(old) == archive_snapshot(root / "repo", by_ref["v1b"]["sha"])

    app.relman("rollback", check=True)
    assert http_get(root / "run/app.sock", "/")[1].startswith("sample v1")
    assert (root / "current").resolve() == old.resolve()
    assert (old / "data/a.txt").read_text() == "alpha\n"


def test_a_file_written_in_the_live_release_is_exported_afresh(make_app, app_repo):
    """A file the live release's app changed in place is not linked: the new release gets
    its commit's bytes, the live release keeps its change."""
    add_files(app_repo)
    app = make_app()
    root = Path(app.config.with_suffix(""))
    app.relman("deploy", "v1b", check=True)
    old = root / "releases" / releases_by_ref(app)["v1b"]["id"]
    with (old / "data/a.txt").open("a") as f:
        f.write("written by the running app\n")
    change_files(app_repo, "v2")
    app.relman("deploy", "v2", check=True)
    new = root / "releases" / releases_by_ref(app)["v2"]["id"]
    assert (new / "data/a.txt").read_text() == "alpha\n"
    assert (old / "data/a.txt").read_text() == "alpha\nwritten by the running app\n"
    assert (old / "data/deep/b.txt").stat().st_ino == (new / "data/deep/b.txt").stat().st_ino


def test_link_unchanged_false_writes_every_file(make_app, app_repo):
    """With build.link_unchanged = false no inode is shared between releases."""
    app = make_app(build={"link_unchanged": False})
    root = Path(app.config.with_suffix(""))
    app.relman("deploy", "v1", check=True)
    release_version(app_repo, "v2")
    out = app.relman("deploy", "v2", check=True).stdout
    assert "hard-linked" not in out
    by_ref = releases_by_ref(app)
    old, new = (root / "releases" / by_ref[ref]["id"] for ref in ("v1", "v2"))
    assert (old / "app.py").stat().st_ino != (new / "app.py").stat().st_ino


def mirror_of(repo: Path, dest: Path) -> Path:
    git(repo.parent, "clone", "-q", "--mirror", str(repo), str(dest))
    return dest


def test_export_attributes_and_another_file_system_fall_back_to_the_whole_tree(
        app_repo, base_dir):
    """export-subst in .gitattributes, or a source on another file system: nothing is
    linked, and the tree is still git archive's."""
    add_files(app_repo)
    mirror = mirror_of(app_repo, base_dir / "mirror.git")
    v1 = git(app_repo, "rev-parse", "HEAD")
    first = linking.export(mirror, v1, base_dir / "one", None)
    assert not first.linked
    source = linking.Source(base_dir / "one", first.index)
    change_files(app_repo, "v2")
    git(mirror, "fetch", "-q", "origin", "+refs/*:refs/*")
    v2 = git(app_repo, "rev-parse", "HEAD")
    linked = linking.export(mirror, v2, base_dir / "two", source)
    assert "data/a.txt" in linked.linked
    assert snapshot(base_dir / "two") == archive_snapshot(mirror, v2)

    shm = Path("/dev/shm")
    need(shm.is_dir() and shm.stat().st_dev != base_dir.stat().st_dev,
         "no /dev/shm on a file system of its own", "mount a tmpfs on /dev/shm")
    with tempfile.TemporaryDirectory(dir=shm) as tmp:
        elsewhere = linking.export(mirror, v1, Path(tmp) / "one", None)
        away = linking.export(mirror, v2, base_dir / "three",
                              linking.Source(Path(tmp) / "one", elsewhere.index))
    assert not away.linked
    assert snapshot(base_dir / "three") == archive_snapshot(mirror, v2)

    (app_repo / ".gitattributes").write_text("VERSION export-subst\n")
    (app_repo / "VERSION").write_text("$Format:%H$\n")
    commit(app_repo, "subst", tag="v3")
    git(mirror, "fetch", "-q", "origin", "+refs/*:refs/*")
    v3 = git(app_repo, "rev-parse", "HEAD")
    subst = linking.export(mirror, v3, base_dir / "four", linking.Source(base_dir / "two",
                                                                         linked.index))
    assert not subst.linked
    assert (base_dir / "four" / "VERSION").read_text() == f"{v3}\n"


def test_a_failed_build_that_wrote_a_linked_static_file_leaves_static_as_live_serves_it(
        make_app, app_repo):
    """A build step writes in place into a [static] file shared with the live release (one
    inode, also the one static/ publishes), then the build fails: the live release gets its
    file back, and so does static/ (no swap comes to publish again)."""
    add_files(app_repo)
    write = "grep -q v2 VERSION && echo appended >> data/a.txt && exit 1 || true"
    app = make_app(static={'"/data/"': "data"}, build={"commands": [["sh", "-c", write]]})
    root = Path(app.config.with_suffix(""))
    app.relman("deploy", "v1b", check=True)
    published = root / "static/data/a.txt"
    assert published.read_text() == "alpha\n"
    change_files(app_repo, "v2")
    failed = app.relman("deploy", "v2")
    assert failed.returncode != 0
    assert "written in place (data/a.txt)" in failed.stdout + failed.stderr
    old = root / "releases" / releases_by_ref(app)["v1b"]["id"]
    assert (old / "data/a.txt").read_text() == "alpha\n"
    assert published.read_text() == "alpha\n", "static/ serves what the live release has"


def test_a_daemon_killed_during_a_build_that_wrote_a_linked_file_repairs_the_live_release(
        make_app, app_repo, base_dir):
    """kill -9 of the daemon while a build step that appended to a file shared with the live
    release still runs: the next daemon removes the half-built release and gives the live
    release its commit's file back (nothing else would: the live release is the rollback
    target of every later deploy, and its changed file is no longer linked, only kept)."""
    add_files(app_repo)
    marker = base_dir / "written"
    step = (f"grep -q v2 VERSION || exit 0; echo appended >> data/a.txt && touch {marker} "
            "&& exec sleep 600")
    app = make_app(build={"commands": [["sh", "-c", step]]})
    root = Path(app.config.with_suffix(""))
    app.relman("deploy", "v1b", check=True)
    old = root / "releases" / releases_by_ref(app)["v1b"]["id"]
    change_files(app_repo, "v2")
    client = subprocess.Popen([*RELMAN, "--config", str(app.config), "deploy", "v2"],
                              env=app.env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        wait_until(marker.exists, timeout=120, what="the build step to write data/a.txt")
        assert (old / "data/a.txt").read_text() == "alpha\nappended\n"  # one inode, shared
        app.kill9()
    finally:
        client.kill()
        client.wait(10)
    app.start()
    assert (old / "data/a.txt").read_text() == "alpha\n"
    assert snapshot(old) == archive_snapshot(root / "repo", releases_by_ref(app)["v1b"]["sha"])
    assert http_get(root / "run/app.sock", "/")[1].startswith("sample v1")

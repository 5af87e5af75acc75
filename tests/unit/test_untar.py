"""A release tree is unpacked from git archive's tar stream with PEP 706's "data" rules, on
every 3.11: through tarfile's own filter where it exists (3.11.4+), else by relman's check
of each member (Debian 12's /usr/bin/python3 is 3.11.2)."""

from __future__ import annotations

import asyncio
import io
import os
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from relman.errors import FetchFailed
from relman.releases import git, untar
from testing.git import commit

# Each test runs once per extraction path. The tarfile filter exists on 3.11.4+ only; the
# relman check runs on any interpreter by flipping the capability flag (as trio does), so a
# newer interpreter (make smoke-newest's) still tests the path 3.11.2 takes. There, 3.12+
# warns that extractall() without a filter will filter by default in 3.14: relman's check
# stays right then (a member it lets through passes the "data" filter too).
# Where the filter does not exist its cases are not made at all (rather than skipped: no
# test may skip in CI); make smoke-newest runs them on the newest interpreter.
PATHS = [
    *([pytest.param(True, id="tarfile-filter")] if hasattr(tarfile, "data_filter") else []),
    pytest.param(False, id="relman-check", marks=pytest.mark.filterwarnings(
        "ignore:Python 3.14 will, by default, filter:DeprecationWarning")),
]


@pytest.fixture(params=PATHS)
def data_filter(request, monkeypatch) -> bool:
    monkeypatch.setattr(untar, "HAS_DATA_FILTER", request.param)
    return request.param


def make_tar(*members: tuple[str, bytes | int, str]) -> io.BytesIO:
    """A tar of (name, content or mode, kind) members: kind is "file", "dir", "sym" or
    "hard" (content is then the link target), "chr" or "fifo"."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, content, kind in members:
            info = tarfile.TarInfo(name)
            info.uid, info.gid, info.uname, info.gname = 1234, 1234, "nobody", "nogroup"
            data = None
            if kind == "file":
                assert isinstance(content, bytes)
                info.size, info.mode, data = len(content), 0o664, io.BytesIO(content)
            elif kind == "mode":
                assert isinstance(content, int)
                info.mode, info.size, data = content, 1, io.BytesIO(b"x")
            elif kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o775
            elif kind in ("sym", "hard"):
                assert isinstance(content, str)
                info.type = tarfile.SYMTYPE if kind == "sym" else tarfile.LNKTYPE
                info.linkname = content
            else:
                info.type = tarfile.CHRTYPE if kind == "chr" else tarfile.FIFOTYPE
            tar.addfile(info, data)
    out.seek(0)
    return out


def test_export_tree_writes_the_commit_tree(data_filter, tmp_path: Path):
    """export_tree writes the commit's files, modes and in-tree symlinks, and no .git."""
    repo = tmp_path / "repo"
    (repo / "pkg").mkdir(parents=True)
    (repo / "pkg" / "app.py").write_text("print('hi')\n")
    (repo / "run.sh").write_text("#!/bin/sh\n")
    (repo / "run.sh").chmod(0o755)
    (repo / "app.py").symlink_to("pkg/app.py")
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    sha = commit(repo, "one")
    mirror = tmp_path / "mirror.git"
    subprocess.run(["git", "clone", "-q", "--mirror", str(repo), str(mirror)], check=True)
    dest = tmp_path / "release"

    asyncio.run(git.export_tree(mirror, sha, dest))

    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*")) == [
        "app.py", "pkg", "pkg/app.py", "run.sh"]
    assert (dest / "app.py").readlink() == Path("pkg/app.py")
    assert (dest / "app.py").read_text() == "print('hi')\n"
    assert stat.S_IMODE((dest / "run.sh").stat().st_mode) == 0o755
    assert stat.S_IMODE((dest / "pkg/app.py").stat().st_mode) == 0o644


@pytest.mark.parametrize(("members", "refused"), [
    ([("../evil", b"x", "file")], "../evil"),
    ([("pkg", 0, "dir"), ("pkg/../../evil", b"x", "file")], "pkg/../../evil"),
    ([("passwd", "/etc/passwd", "sym")], "passwd"),
    ([("pkg", 0, "dir"), ("pkg/up", "../..", "sym")], "pkg/up"),
    ([("inside", "pkg", "sym"), ("pkg", 0, "dir"), ("inside/../../evil", b"x", "file")],
     "inside/../../evil"),
    ([("hard", "../outside", "hard")], "hard"),
    ([("tty", 0, "chr")], "tty"),
    ([("pipe", 0, "fifo")], "pipe"),
], ids=["dotdot", "dotdot-deep", "abs-symlink", "symlink-out", "through-symlink", "hardlink-out",
        "device", "fifo"])
def test_unsafe_members_are_refused(data_filter, tmp_path: Path, members, refused):
    """Nothing lands outside the destination: the first unsafe member stops the export."""
    (tmp_path / "outside").write_text("keep")
    dest = tmp_path / "release"
    dest.mkdir()
    with pytest.raises(untar.UnsafeMember) as caught:
        untar.unpack(make_tar(*members), dest)
    assert caught.value.name == refused
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outside", "release"]
    assert (tmp_path / "outside").read_text() == "keep"


def test_an_unsafe_tree_fails_the_export_with_a_reason(data_filter, tmp_path: Path):
    """A repository with a symlink out of the tree fails the deploy (exit 1), naming it."""
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "media").symlink_to("/srv/media")
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    sha = commit(repo, "one")
    with pytest.raises(FetchFailed, match="media: a link to an absolute path: refused"):
        asyncio.run(git.export_tree(repo / ".git", sha, tmp_path / "release"))


def test_data_keeps_no_privileges(data_filter, tmp_path: Path):
    """Modes lose setuid and group/other write, owners are whoever extracts, and a leading
    slash is dropped (the member lands inside)."""
    dest = tmp_path / "release"
    dest.mkdir()
    tar = make_tar(("suid", 0o4775, "mode"), ("shared", 0o666, "mode"),
                   ("readonly", 0o444, "mode"), ("/abs/file", b"x", "file"))
    untar.unpack(tar, dest)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in dest.iterdir() if p.is_file()}
    assert modes == {"suid": 0o755, "shared": 0o644, "readonly": 0o644}
    assert (dest / "abs" / "file").read_bytes() == b"x"
    assert {p.stat().st_uid for p in dest.rglob("*")} == {os.geteuid()}

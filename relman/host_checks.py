"""Checks of the host for `relman check` that a deploy would otherwise meet late: the
interpreter of build.python, the socket group, and git's ownership rule for a local repo.
Each returns (ok, detail); the user's ids are arguments, so tests need no other users."""

from __future__ import annotations

import grp
import os
import shutil
import subprocess
from pathlib import Path

Check = tuple[bool, str]


def python_check(python: str, path: str | None = None) -> Check:
    """build.python must be an interpreter the deploy user can run."""
    found = shutil.which(python, path=path)
    if found is None:
        return False, (f"{python!r} is not found on PATH or not executable by this user "
                       "(a pyenv build under /root is not, for other users)")
    return True, f"{python} is {found}"


def socket_group_check(group: str, *, gids: set[int], uid: int) -> Check:
    """The daemon (this user, with *gids*) must be in server.socket_group to give the
    socket to it (root may give it to any group)."""
    try:
        gid = grp.getgrnam(group).gr_gid
    except KeyError:
        return False, f"server.socket_group: no group named {group!r} on this host"
    if uid == 0:
        return True, (f"{group} (gid {gid}); run as the deploy user to check that it is "
                      "in the group")
    if gid not in gids:
        return False, (f"server.socket_group: this user is not in group {group!r}: "
                       f"usermod -aG {group} USER, then restart the daemon")
    return True, f"{group} (gid {gid})"


def local_repo(repo: str) -> Path | None:
    """app.repo as a local directory, None for a URL or scp-like address."""
    repo = repo.removeprefix("file://")
    if "://" in repo or ":" in repo.split("/", 1)[0]:  # a URL, or user@host:path
        return None
    path = Path(repo)
    return path if path.is_absolute() else None


def repo_owner_check(repo: str, *, uid: int) -> Check | None:
    """git refuses a repository another user owns ("dubious ownership") unless it is a
    safe.directory; None when app.repo is not a local directory."""
    path = local_repo(repo)
    if path is None or not path.exists():
        return None
    gitdir = path / ".git" if (path / ".git").is_dir() else path  # what git checks
    owner = gitdir.stat().st_uid
    if owner == uid or uid == 0:
        return True, f"{path} is this user's (or root's to read)"
    safe = subprocess.run(["git", "config", "--get-all", "safe.directory"],
                          capture_output=True, text=True, check=False).stdout.split()
    if "*" in safe or {str(path), f"{path}/", str(gitdir), f"{gitdir}/"} & set(safe):
        return True, f"{path} is owned by uid {owner}, listed in safe.directory"
    return False, (f"app.repo: {path} is owned by uid {owner}, not this user: git refuses "
                   f"it (\"dubious ownership\"); as this user run git config --global "
                   f"--add safe.directory {path}")


def user_gids() -> set[int]:
    return {os.getegid(), *os.getgroups()}

"""The bare mirror: clone or fetch incrementally, resolve refs, export trees with git archive."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import stat
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from relman.atomic import current_umask
from relman.errors import BadRef, FetchFailed
from relman.redact import redact_url
from relman.releases.commands import OnLine, clean_env, run_logged
from relman.releases.ids import parse_commit_time
from relman.releases.refs import validate_ref
from relman.releases.untar import UnsafeMember, unpack

# Bits git must not give to what it writes in the mirror: group write, everything for others.
PRIVATE_UMASK = 0o027


@dataclass(frozen=True, slots=True)
class Commit:
    sha: str
    time: int  # committer date, unix seconds: the release id's timestamp


def _git(mirror: Path, *args: str) -> list[str]:
    return ["git", f"--git-dir={mirror}", *args]


async def fetch_mirror(repo: str, mirror: Path, log_path: Path, on_line: OnLine | None,
                       extra_env: Mapping[str, str] | None = None) -> None:
    """Bring the bare mirror up to date with *repo*: clone once, then incremental fetches.

    The mirror holds the whole history and, in its config, app.repo with any token in it:
    git runs under a umask that keeps what it writes from other users (DESIGN section 4:
    repo/ 0750), where `git clone` alone made repo/ 0755 under the usual umask 022.
    """
    umask = current_umask() | PRIVATE_UMASK
    env = {**clean_env(), **(extra_env or {})}
    env["GIT_TERMINAL_PROMPT"] = "0"  # never hang on a password prompt inside the daemon
    if (mirror / "HEAD").exists():
        steps = [
            _git(mirror, "remote", "set-url", "origin", "--", repo),
            _git(mirror, "fetch", "--prune", "--progress", "origin"),
        ]
    else:
        # Clone beside the mirror and rename, so a crash mid-clone leaves no half mirror.
        partial = mirror.with_name(mirror.name + ".partial")
        await asyncio.to_thread(shutil.rmtree, partial, ignore_errors=True)
        if mirror.exists():
            mirror.rmdir()  # the empty directory `relman init` made
        steps = [["git", "clone", "--mirror", "--progress", "--", repo, str(partial)]]
    for argv in steps:
        result = await run_logged(
            argv, cwd=mirror.parent, env=env, log_path=log_path, on_line=on_line, umask=umask
        )
        if result.returncode != 0:
            raise FetchFailed(f"fetching {redact_url(repo)} failed (git exit "
                              f"{result.returncode})", tail=result.tail)
    if not (mirror / "HEAD").exists():
        mirror.with_name(mirror.name + ".partial").rename(mirror)
    # A mirror cloned by an older relman is 0755: closing its top directory closes it all.
    os.chmod(mirror, stat.S_IMODE(mirror.stat().st_mode) & ~PRIVATE_UMASK)


async def _git_output(mirror: Path, *args: str) -> tuple[int, str]:
    """(exit status, stdout) of a quick git query, run without blocking the event loop."""
    proc = await asyncio.create_subprocess_exec(
        *_git(mirror, *args), stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, env=clean_env(),
    )
    try:
        out, _ = await proc.communicate()
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise
    return proc.returncode or 0, out.decode()


async def resolve_ref(mirror: Path, ref: str) -> Commit:
    """The commit *ref* names in the mirror, or BadRef."""
    validate_ref(ref)
    code, out = await _git_output(
        mirror, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}")
    if code != 0:
        raise BadRef(ref, "no such branch, tag or commit in the repository")
    sha = out.strip()
    code, shown = await _git_output(mirror, "show", "-s", "--format=%ct", sha)
    if code != 0:
        raise FetchFailed(f"git show {sha[:12]} failed in the mirror (exit {code})")
    shown = shown.strip()
    time = parse_commit_time(shown)
    if time is None:  # year 10000, or a date git cannot read: "" (git fsck: badDate...)
        raise BadRef(ref, f"commit {sha[:12]} has committer date {shown or '(unreadable)'!r}, "
                     "outside the years 1970 to 9999 that a release id can hold")
    return Commit(sha=sha, time=time)


def _export(mirror: Path, sha: str, dest: Path) -> None:
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(mode=0o755)
    archive_into(mirror, sha, dest)


def archive_into(mirror: Path, sha: str, dest: Path, paths: Sequence[str] | None = None
                 ) -> None:
    """Unpack `git archive` of *sha* into the existing directory *dest*: the whole tree, or
    only *paths* (literal paths, never patterns; an empty list writes nothing)."""
    if paths is not None and not paths:
        return
    argv = ["git", "--literal-pathspecs", f"--git-dir={mirror}", "archive", "--format=tar",
            sha, *(["--", *paths] if paths else [])]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          env=clean_env()) as proc:
        assert proc.stdout is not None
        try:
            unpack(proc.stdout, dest)
        except UnsafeMember as e:
            raise FetchFailed(f"git archive {sha[:7]}: {e}: refused", hint="a release holds "
                              "only its own files; build.shared links those that live "
                              "outside it") from None
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.returncode != 0:
        raise FetchFailed(f"git archive {sha[:7]} failed", tail=redact_url(err))


def git_bytes(mirror: Path, *args: str) -> bytes:
    """The stdout of a git query in the mirror (blocking: call it in a thread), or
    FetchFailed."""
    proc = subprocess.run(_git(mirror, *args), capture_output=True, env=clean_env(),
                          check=False)
    if proc.returncode != 0:
        raise FetchFailed(f"git {args[0]} failed in the mirror (exit {proc.returncode})",
                          tail=redact_url(proc.stderr.decode(errors="replace")))
    return proc.stdout


async def export_tree(mirror: Path, sha: str, dest: Path) -> None:
    """Write the tree of *sha* into *dest* with git archive: never a checkout, no .git inside.
    In a thread, like every slow step: the daemon's event loop must keep answering."""
    await asyncio.to_thread(_export, mirror, sha, dest)

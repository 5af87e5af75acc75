"""Real git repositories of the sample app, made in a temp dir (pre-commit's make_repo)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

SAMPLE = Path(__file__).parent / "apps" / "sample"
# Commits are spread one minute apart from a fixed date, so release ids (commit time + sha)
# sort in commit order even when a test makes several commits within one second.
BASE_TIME = 1_790_000_000

GIT_ENV = {
    "GIT_AUTHOR_NAME": "relman tests", "GIT_AUTHOR_EMAIL": "tests@relman.invalid",
    "GIT_COMMITTER_NAME": "relman tests", "GIT_COMMITTER_EMAIL": "tests@relman.invalid",
    "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull,
}


def git(repo: Path, *args: str, env: dict[str, str] | None = None,
        stdin: str | None = None) -> str:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    full_env.update(GIT_ENV)
    full_env.update(env or {})
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                          text=True, env=full_env, input=stdin).stdout.strip()


def commit(repo: Path, message: str, *, tag: str | None = None, when: int | None = None
           ) -> str:
    """Commit everything in *repo* (dated *when*, unix seconds, if given); return the sha."""
    count = int(git(repo, "rev-list", "--all", "--count") or 0) if (repo / ".git" / "refs"
                                                                     ).exists() else 0
    stamp = f"@{BASE_TIME + 60 * count if when is None else when} +0000"
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message,
        env={"GIT_AUTHOR_DATE": stamp, "GIT_COMMITTER_DATE": stamp})
    if tag:
        git(repo, "tag", tag)
    return git(repo, "rev-parse", "HEAD")


def commit_dated(repo: Path, message: str, date: str, *, tag: str | None = None) -> str:
    """Commit everything in *repo* with a raw git date ("253402300800 +0000"); return the sha.

    The commit object is written by hand: `git commit` refuses dates past year 9999 and
    before 1970, which are exactly the ones a test of odd dates needs.
    """
    git(repo, "add", "-A")
    who = f"{GIT_ENV['GIT_COMMITTER_NAME']} <{GIT_ENV['GIT_COMMITTER_EMAIL']}>"
    text = (f"tree {git(repo, 'write-tree')}\nparent {git(repo, 'rev-parse', 'HEAD')}\n"
            f"author {who} {date}\ncommitter {who} {date}\n\n{message}\n")
    sha = git(repo, "hash-object", "-t", "commit", "-w", "--literally", "--stdin", stdin=text)
    git(repo, "update-ref", "HEAD", sha)
    if tag:
        git(repo, "update-ref", f"refs/tags/{tag}", sha)  # `git tag` parses the date
    return sha


def make_app_repo(path: Path, *, extra: dict[str, str] | None = None) -> Path:
    """A repo holding the sample app (and any *extra* files) at tag v1 (VERSION says v1)."""
    shutil.copytree(SAMPLE, path, ignore=shutil.ignore_patterns("__pycache__"))
    for name, text in (extra or {}).items():
        (path / name).write_text(text)
    git(path, "init", "-q", "-b", "main")
    commit(path, "v1", tag="v1")
    return path


def release_version(repo: Path, version: str, *, extra: dict[str, str] | None = None,
                    when: int | None = None) -> str:
    """Commit VERSION=*version* (and any *extra* files, dated *when* if given) and tag it
    *version*."""
    (repo / "VERSION").write_text(version + "\n")
    for name, text in (extra or {}).items():
        (repo / name).write_text(text)
    return commit(repo, version, tag=version, when=when)

"""`relman check`'s host checks (issue 11): build.python, the socket group, and git's
ownership rule for a local app.repo."""

from __future__ import annotations

import grp
import os
from pathlib import Path

import pytest

from relman.host_checks import (
    local_repo,
    python_check,
    repo_owner_check,
    socket_group_check,
)


def test_build_python_must_be_found() -> None:
    ok, detail = python_check("python3.99-nowhere")
    assert not ok
    assert "python3.99-nowhere" in detail
    ok, detail = python_check("sh")
    assert ok


def test_socket_group_must_exist_and_hold_this_user() -> None:
    assert not socket_group_check("no-such-group-here", gids=set(), uid=1000)[0]
    group = grp.getgrgid(os.getegid()).gr_name
    assert socket_group_check(group, gids={os.getegid()}, uid=1000)[0]
    ok, detail = socket_group_check(group, gids=set(), uid=1000)
    assert not ok
    assert f"usermod -aG {group}" in detail
    assert socket_group_check(group, gids=set(), uid=0)[0]  # root may chown to any group


@pytest.mark.parametrize(("repo", "local"), [
    ("/srv/git/shop.git", "/srv/git/shop.git"),
    ("file:///srv/git/shop.git", "/srv/git/shop.git"),
    ("https://example.com/shop.git", None),
    ("git@example.com:shop.git", None),
    ("relative/path", None),
])
def test_local_repo(repo: str, local: str | None) -> None:
    assert local_repo(repo) == (Path(local) if local else None)


def test_a_repo_another_user_owns_names_the_safe_directory_fix(tmp_path: Path,
                                                               monkeypatch) -> None:
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(tmp_path / "gitconfig"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    repo = tmp_path / "shop.git"
    repo.mkdir()
    owner = repo.stat().st_uid
    assert repo_owner_check(str(repo), uid=owner) == (True, repo_owner_check(
        str(repo), uid=owner)[1])
    ok, detail = repo_owner_check(str(repo), uid=owner + 4242)
    assert not ok
    assert f"safe.directory {repo}" in detail
    (tmp_path / "gitconfig").write_text(f"[safe]\n\tdirectory = {repo}\n")
    assert repo_owner_check(str(repo), uid=owner + 4242)[0]
    assert repo_owner_check("https://example.com/x.git", uid=1) is None


def test_a_working_tree_repo_is_checked_by_its_git_dir(tmp_path: Path, monkeypatch) -> None:
    """For a repository with a working tree git checks (and safe.directory may name) its
    .git directory."""
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(tmp_path / "gitconfig"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    repo = tmp_path / "shop"
    (repo / ".git").mkdir(parents=True)
    other = repo.stat().st_uid + 4242
    assert not repo_owner_check(str(repo), uid=other)[0]
    (tmp_path / "gitconfig").write_text(f"[safe]\n\tdirectory = {repo}/.git\n")
    assert repo_owner_check(str(repo), uid=other)[0]

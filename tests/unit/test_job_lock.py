"""One job at a time: requests that arrive in the same event-loop turn (a check-then-act
race, ANCHORS.md) cannot both pass the lock check."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from relman.config import load_config
from relman.daemon import Daemon
from relman.errors import LockHeld
from relman.releases.layout import AppRoot
from testing.daemon import write_config


@pytest.fixture
def daemon(tmp_path: Path) -> Daemon:
    root = tmp_path / "app"
    config = write_config(tmp_path / "app.toml", name="app", repo=tmp_path / "repo", root=root,
                          server={"kind": "gunicorn", "app": "app:server"})
    AppRoot(root).create()
    return Daemon(load_config(config))


def run_two(daemon: Daemon, *, wait: bool) -> tuple[list[Any], list[str]]:
    ran: list[str] = []

    def work(name: str) -> Any:
        async def body(_report: Any) -> str:
            ran.append(name)
            await asyncio.sleep(0.05)
            return name
        return body

    async def both() -> list[Any]:
        return await asyncio.gather(
            daemon.job("deploy a", "alice", {"wait": wait}, lambda _e: None, work("a")),
            daemon.job("deploy b", "bob", {"wait": wait}, lambda _e: None, work("b")),
            return_exceptions=True)

    return asyncio.run(both()), ran


def test_the_second_of_two_simultaneous_jobs_exits_4_naming_the_first(daemon: Daemon) -> None:
    results, ran = run_two(daemon, wait=False)
    assert results[0] == "a"
    assert isinstance(results[1], LockHeld)
    assert results[1].exit_code == 4
    assert "another job holds the deploy lock: deploy a by alice since" in results[1].message
    assert ran == ["a"]
    assert daemon.pending == []


def test_with_wait_they_run_one_after_the_other(daemon: Daemon) -> None:
    results, ran = run_two(daemon, wait=True)
    assert results == ["a", "b"]
    assert ran == ["a", "b"]
    assert daemon.pending == []

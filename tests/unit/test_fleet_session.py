"""relman/fleet/session.py against a stand-in for ssh (a real program, fleet.ssh's first
word) playing `relman --json session` on a host: commands answered in order on one session,
and each way a session can fail to be one (no session there, an unreachable host, a session
that ends mid-command, a caller that gives up waiting) answered as a command of its own
would be."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from relman.config_fleet import FleetConfig
from relman.fleet.connections import Connections
from relman.fleet.remote import Answer
from relman.fleet.session import Sessions

# `fake-ssh -- DESTINATION 'relman --json session'` (or another command: one of its own)
FAKE = r'''
import json, os, sys, time
dest, command = sys.argv[-2], sys.argv[-1]
def say(obj):
    print(json.dumps(obj), flush=True)
if not command.endswith(" session"):  # a command in an ssh session of its own
    if dest == "lost":
        sys.stderr.write("ssh: connect to host lost port 22: Connection refused\r\n")
        sys.exit(255)
    say({"alone": command, "pid": os.getpid()})
    sys.exit(0)
if dest == "lost":
    sys.stderr.write("ssh: connect to host lost port 22: Connection refused\r\n")
    sys.exit(255)
if dest == "old":  # a relman without `session`
    say({"error": {"code": "usage", "message": "No such command 'session'."}})
    sys.exit(2)
say({"type": "session", "version": "test"})
for line in sys.stdin:
    line = line.strip()
    if dest == "dies":
        say({"type": "progress", "step": "switch", "message": "switching"})
        sys.exit(255)
    if line == "slow":
        time.sleep(1.5)
    if line == "deep":
        print("[" * 200_000, flush=True)  # past json's nesting depth
    say({"type": "progress", "step": "ran", "message": line})
    if line == "refused":
        say({"error": {"code": "usage", "message": "no release is prepared"}})
        say({"type": "done", "exit": 2})
        continue
    say({"line": line, "pid": os.getpid()})
    say({"type": "done", "exit": 0})
with open(os.environ["FAKE_ENDED"], "a") as f:
    f.write(dest + "\n")
'''


@pytest.fixture(autouse=True)
def _ended(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where a session that ended by itself (its stdin closed) writes its host."""
    monkeypatch.setenv("FAKE_ENDED", str(tmp_path / "ended"))


def sessions(tmp_path: Path, *hosts: str) -> Sessions:
    fake = tmp_path / "fake_ssh.py"
    fake.write_text(FAKE)
    fleet = FleetConfig(hosts=hosts, ssh=(sys.executable, str(fake)), multiplex=False)
    return Sessions(fleet, Connections(fleet), asyncio.Semaphore(fleet.parallel))


def run_all(tmp_path: Path, host: str, *lines: str, give_up: str = ""
            ) -> tuple[list[Answer | None], list[tuple[str, str, str]], int]:
    """Each of *lines* (a line is its words) asked on *host* in turn, the one equal to
    *give_up* given up on after 0.3 s; the session closed at the end. (answers, lines
    echoed, ssh sessions opened)"""
    echoed: list[tuple[str, str, str]] = []
    all_ = sessions(tmp_path, host)

    async def main() -> list[Answer | None]:
        answers: list[Answer | None] = []
        try:
            for line in lines:
                ask = all_.ask(host, line.split(" "), lambda *e: echoed.append(e))
                if line == give_up:
                    try:
                        answers.append(await asyncio.wait_for(ask, 0.3))
                    except TimeoutError:
                        answers.append(None)
                else:
                    answers.append(await ask)
        finally:
            await all_.close()
        return answers

    return asyncio.run(main()), echoed, all_.opened(host)


def test_commands_are_lines_on_one_session_answered_in_order(tmp_path: Path) -> None:
    answers, echoed, opened = run_all(tmp_path, "web1", "status", "deploy v2 --prepare",
                                      "refused")
    assert opened == 1
    first, second, third = answers
    assert first is not None
    assert first.ok
    assert first.result["line"] == "status"
    assert second is not None
    assert second.result["line"] == "deploy v2 --prepare"
    assert first.result["pid"] == second.result["pid"]  # one ssh, one relman session
    assert third is not None
    assert not third.ok
    assert third.code == 2
    assert third.reason == "no release is prepared"
    assert ("web1", "ran", "deploy v2 --prepare") in echoed
    # closed: its stdin ended, the session ended by itself
    assert (tmp_path / "ended").read_text() == "web1\n"


def test_a_host_without_session_runs_each_command_alone(tmp_path: Path) -> None:
    answers, _, opened = run_all(tmp_path, "old", "status", "switch R")
    assert opened == 3  # the session refused, then one each
    assert [a.result["alone"] for a in answers if a is not None] == [
        "relman --json status", "relman --json switch R"]


def test_an_unreachable_host_is_answered_unreachable(tmp_path: Path) -> None:
    answers, _, _ = run_all(tmp_path, "lost", "status", "status")
    for answer in answers:
        assert answer is not None
        assert answer.unreachable
        assert answer.reason.startswith("ssh exit 255: ssh: connect to host lost")


def test_a_session_that_ends_mid_command_is_a_lost_answer_then_commands_alone(
        tmp_path: Path) -> None:
    answers, echoed, _ = run_all(tmp_path, "dies", "switch R", "status")
    lost, after = answers
    assert lost is not None
    assert lost.result is None
    assert lost.error is None
    assert lost.code == 255
    assert ("dies", "switch", "switching") in echoed
    assert after is not None
    assert after.result["alone"] == "relman --json status"


def test_an_answer_given_up_on_is_not_the_next_commands(tmp_path: Path) -> None:
    """A status look that timed out stays on the session until it is answered: the next
    command goes in an ssh session of its own, not behind it, and is never given the
    answer the first one gets later."""
    answers, echoed, opened = run_all(tmp_path, "web1", "status", "slow", "switch R",
                                      give_up="slow")
    status, gave_up, switch = answers
    assert status is not None
    assert status.result["line"] == "status"
    assert gave_up is None
    assert switch is not None
    assert switch.result["alone"] == "relman --json switch R"
    assert ("web1", "ran", "slow") in echoed  # it was sent, and answered at the close
    assert opened == 2


def test_words_that_are_no_line_go_alone_and_deep_json_is_no_crash(tmp_path: Path) -> None:
    answers, _, opened = run_all(tmp_path, "web1", "deploy a\nb", "deep", "status")
    alone, deep, status = answers
    assert alone is not None
    assert alone.result["alone"] == "relman --json deploy 'a\nb'"
    assert deep is not None
    assert deep.result["line"] == "deep"
    assert any(said.startswith("[[[") for said in deep.said)
    assert status is not None
    assert status.result["line"] == "status"
    assert opened == 2


def test_each_host_has_a_session_of_its_own(tmp_path: Path) -> None:
    async def main() -> list[Answer]:
        all_ = sessions(tmp_path, "a", "b", "c")
        all_.limit = asyncio.Semaphore(1)
        try:
            return await asyncio.gather(*(all_.ask(h, ["status"], lambda *e: None)
                                          for h in ("a", "b", "c")))
        finally:
            await all_.close()

    answers = asyncio.run(main())
    assert [(a.host, a.result["line"]) for a in answers] == [
        ("a", "status"), ("b", "status"), ("c", "status")]
    assert len({a.result["pid"] for a in answers}) == 3


def test_a_reader_that_fails_ends_the_session_and_answers_what_waits(tmp_path: Path) -> None:
    """A bug in reading a host's lines (here: the echo of its progress raises) must not
    leave a command waiting forever on a session whose ssh is still running."""
    def explode(_host: str, step: str, _message: str) -> None:
        if step == "ran":
            raise RuntimeError("a bug")

    async def main() -> Answer:
        all_ = sessions(tmp_path, "web1")
        try:
            return await asyncio.wait_for(all_.ask("web1", ["status"], explode), 30)
        finally:
            await all_.close()

    answer = asyncio.run(main())
    assert answer.result is None
    assert answer.error is None

"""relman/fleet/remote.py against a stand-in for ssh (a real program, fleet.ssh's first word):
odd answers from a host become an Answer with a reason, never a crash of the coordinator."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from relman.config_fleet import FleetConfig
from relman.fleet.remote import NOT_RUN, Answer, run_on

# The stand-in: `fake-ssh -- DESTINATION 'relman --json ...'`; the destination says what to do.
FAKE = r'''
import json, sys
dest, command = sys.argv[-2], sys.argv[-1]
if dest == "ok":
    print(json.dumps({"type": "progress", "step": "fetched", "message": "v2 is abc"}))
    print(json.dumps({"release": "R", "command": command}))
elif dest == "long":
    print("x" * 200_000)  # a build log line past asyncio's 64 KiB
    print(json.dumps({"release": "R"}))
elif dest == "huge":
    print("y" * (17 * 2**20))  # past the coordinator's own line limit
    print(json.dumps({"release": "R"}))
elif dest == "junk":
    print("Connection to junk closed.")
elif dest == "error":
    print(json.dumps({"error": {"code": "usage", "message": "switch R: no release is prepared"}}))
    sys.exit(2)
elif dest == "lost":
    # ssh ends its own error lines with CR LF (OpenSSH 9.2 here)
    sys.stderr.write("ssh: connect to host lost port 22: Connection refused\r\n")
    sys.exit(255)
elif dest == "list":
    print(json.dumps([{"id": "R"}]))
'''


def ask(tmp_path: Path, dest: str, ssh: tuple[str, ...] | None = None
        ) -> tuple[Answer, list[tuple[str, str, str]]]:
    fake = tmp_path / "fake_ssh.py"
    fake.write_text(FAKE)
    fleet = FleetConfig(hosts=(dest,), ssh=ssh or (sys.executable, str(fake)))
    lines: list[tuple[str, str, str]] = []
    answer = asyncio.run(run_on(fleet, dest, ["deploy", "v2", "--prepare"],
                                lambda *line: lines.append(line)))
    return answer, lines


def test_an_answer_and_its_progress_lines(tmp_path: Path) -> None:
    answer, lines = ask(tmp_path, "ok")
    assert answer.ok
    assert answer.result["command"] == "relman --json deploy v2 --prepare"
    assert lines == [("ok", "fetched", "v2 is abc")]


def test_a_line_longer_than_asyncio_reads_is_read(tmp_path: Path) -> None:
    answer, lines = ask(tmp_path, "long")
    assert answer.ok
    assert answer.result == {"release": "R"}
    assert len(lines[0][2]) == 200_000


def test_a_line_past_the_limit_is_skipped_not_a_crash(tmp_path: Path) -> None:
    answer, _ = ask(tmp_path, "huge")
    assert answer.ok
    assert answer.result == {"release": "R"}
    assert "(a line of over 16 MiB skipped)" in answer.said


@pytest.mark.parametrize(("dest", "ok", "unreachable", "reason"), [
    ("junk", False, False, "no answer from relman"),
    ("error", False, False, "switch R: no release is prepared"),
    ("lost", False, True, "ssh exit 255: ssh: connect to host lost port 22"),
])
def test_answers_that_are_not_results(tmp_path: Path, dest: str, ok: bool, unreachable: bool,
                                      reason: str) -> None:
    answer, _ = ask(tmp_path, dest)
    assert answer.ok is ok
    assert answer.unreachable is unreachable
    assert answer.reason.startswith(reason), answer.reason
    assert "\r" not in answer.reason  # a CR would send the table's cursor back


def test_a_list_answer(tmp_path: Path) -> None:
    answer, _ = ask(tmp_path, "list")
    assert answer.ok
    assert answer.result == [{"id": "R"}]


def test_an_ssh_that_cannot_run(tmp_path: Path) -> None:
    answer, _ = ask(tmp_path, "ok", ssh=(str(tmp_path / "no-such-ssh"),))
    assert answer.code == NOT_RUN
    assert not answer.ok
    assert not answer.unreachable
    assert answer.reason.startswith("cannot run ")
    assert "No such file" in answer.reason


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A temp dir short enough for unix socket paths (pytest's, under xdist, is not: the
    sockets would go to /tmp instead)."""
    import shutil
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="rt-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_connections_dir_is_private_and_goes_and_stale_ones_are_removed(
        short_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """[fleet] multiplex: one ControlPath per host entry in a 0700 directory of the run's;
    close() removes it; an empty one a killed run left is removed by the next, one with
    anything in it never."""
    import os
    import stat
    import tempfile

    from relman.fleet.connections import PREFIX, Connections

    tmp_path = short_tmp
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    stale, busy = tmp_path / f"{PREFIX}old", tmp_path / f"{PREFIX}busy"
    stale.mkdir()
    busy.mkdir()
    (busy / "h0").write_text("")
    for path in (stale, busy):
        os.utime(path, (0, 0))
    connections = Connections(FleetConfig(hosts=("a@h1", "a@h2")))
    assert not stale.exists()
    assert busy.exists()
    assert connections.dir is not None
    assert stat.S_IMODE(connections.dir.stat().st_mode) == 0o700
    assert connections.path("a@h1") != connections.path("a@h2")
    asyncio.run(connections.close())
    assert not connections.dir.exists()
    assert Connections(FleetConfig(hosts=("a@h1",), multiplex=False)).path("a@h1") is None

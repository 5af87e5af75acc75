"""The audit log: appends survive a torn last line, readers skip what is not an entry."""

from __future__ import annotations

from pathlib import Path

import pytest

from relman.releases.history import read, record


@pytest.mark.parametrize(
    ("before", "kept"),
    [
        pytest.param(b"", b"", id="new-file"),
        pytest.param(b'{"event": "deployed"}\n', b'{"event": "deployed"}\n', id="whole-lines"),
        pytest.param(b'{"event": "depl', b'{"event": "depl\n', id="torn-last-line"),
    ],
)
def test_an_entry_always_starts_on_a_line_of_its_own(tmp_path: Path, before: bytes,
                                                     kept: bytes) -> None:
    """A crash mid-append leaves a torn last line: the next entry ends it first, so the
    entry is not glued to it and lost with it; whole lines get no blank line between."""
    path = tmp_path / "history.jsonl"
    if before:
        path.write_bytes(before)
    entry = record(path, "restarted", release="r1")
    assert path.read_bytes().startswith(kept)
    assert path.read_bytes().count(b"\n") == kept.count(b"\n") + 1
    assert list(read(path))[-1] == entry


def test_readers_skip_torn_and_foreign_lines(tmp_path: Path) -> None:
    """Lines that are not JSON objects (torn, blank, a stray value) are skipped."""
    path = tmp_path / "history.jsonl"
    path.write_text('{"event": "a", "time": 1}\n{"event": "depl\n\n[1, 2]\n7\n'
                    '{"event": "b", "time": 2}\n{"event": "c", "ti')
    assert [e["event"] for e in read(path)] == ["a", "b"]
    assert [e["event"] for e in read(path, since=1.5)] == ["b"]

"""The verification window and the warm deadline after a switch: pure decisions, and the
record a restarted daemon reads them from."""

from __future__ import annotations

import json
import os

import pytest

from relman.transaction.probation import (
    SwitchFile,
    SwitchRecord,
    on_probation,
    warm_left,
)

AT = 1_000.0
V2 = SwitchRecord(release="v2", at=AT, until=AT + 300)


@pytest.mark.parametrize(
    ("record", "live", "now", "window", "expected"),
    [
        (V2, "v2", AT + 10, 300, True),
        (V2, "v2", AT, 300, True),  # the moment of the switch
        (V2, "v2", AT + 300, 300, False),  # the window is half-open
        (V2, "v2", AT + 301, 300, False),
        (V2, "v1", AT + 10, 300, False),  # another release is live: not its switch
        (V2, None, AT + 10, 300, False),
        (SwitchRecord(release="v2", at=AT, until=AT + 300, settled=True), "v2", AT + 10, 300,
         False),
        (SwitchRecord(), None, AT, 300, False),  # nothing switched yet
        (SwitchRecord(), "", AT, 300, False),
        (V2, "v2", AT + 10, 0, False),  # verify_window = 0 turns it off
        (V2, "v2", AT - 5, 300, False),  # the clock went back: no verdict from it
        (V2, "v2", AT + 100, 60, False),  # a reload shortened the window: it is over
        (V2, "v2", AT + 30, 60, True),
        (V2, "v2", AT + 400, 3600, False),  # a reload widened it: what ran out stays out
        (V2, "v2", AT + 200, 3600, True),  # ... and what did not, keeps its own end
        (SwitchRecord(release="v2", at=AT), "v2", AT + 1, 300, False),  # no end recorded
    ],
)
def test_on_probation(record, live, now, window, expected):
    assert on_probation(record, live, now, window) is expected


@pytest.mark.parametrize(
    ("record", "release", "now", "expected"),
    [
        (SwitchRecord(warm="v1", warm_until=AT + 60), "v1", AT, 60.0),
        (SwitchRecord(warm="v1", warm_until=AT + 60), "v1", AT + 59, 1.0),
        (SwitchRecord(warm="v1", warm_until=AT + 60), "v1", AT + 61, 0.0),  # over: stop it
        (SwitchRecord(warm="v1", warm_until=AT + 60), "v0", AT, 0.0),  # nobody kept v0
        (SwitchRecord(), "v1", AT, 0.0),
        (SwitchRecord(), "", AT, 0.0),
    ],
)
def test_warm_left(record, release, now, expected):
    assert warm_left(record, release, now) == pytest.approx(expected)


def test_switch_file_round_trip(tmp_path):
    path = tmp_path / "switch.json"
    switches = SwitchFile(path)
    assert switches.record == SwitchRecord()
    assert not path.exists()
    switches.update(release="v2", at=AT, until=AT + 300)
    switches.update(warm="v1", warm_until=AT + 60)
    again = SwitchFile(path)
    assert again.record == SwitchRecord(release="v2", at=AT, until=AT + 300, warm="v1",
                                        warm_until=AT + 60)
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_unchanged_record_is_not_rewritten(tmp_path):
    path = tmp_path / "switch.json"
    switches = SwitchFile(path)
    switches.update(release="v2", at=AT)
    before = path.stat().st_mtime_ns
    os.utime(path, ns=(1, 1))
    switches.update(release="v2")
    assert path.stat().st_mtime_ns == 1 != before


@pytest.mark.parametrize(
    "content",
    ["", "{", "[1, 2]", '"v2"', json.dumps({"release": "v2", "at": "soon"}),
     json.dumps({"release": "v2", "at": None})],
)
def test_unreadable_record_starts_empty(tmp_path, content):
    """A damaged switch.json costs the probation and the warm window, nothing else: the
    daemon starts, and no release is rolled back or kept on its say-so. The file is set
    aside (switch.json.corrupt-<ts>) for a post-mortem."""
    path = tmp_path / "switch.json"
    path.write_text(content)
    assert SwitchFile(path).record == SwitchRecord()
    assert not path.exists()
    (aside,) = tmp_path.glob("switch.json.corrupt-*")
    assert aside.read_text() == content


def test_unknown_keys_are_ignored(tmp_path):
    path = tmp_path / "switch.json"
    path.write_text(json.dumps({"release": "v2", "at": AT, "later": 1}))
    assert SwitchFile(path).record == SwitchRecord(release="v2", at=AT)

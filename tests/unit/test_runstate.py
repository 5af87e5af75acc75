"""The run record: what runs, which instance is live or warm, the last switch and its
probation. Pure transitions and decisions with an injected clock (no sleeping through
windows), and the file a restarted daemon reads them from."""

from __future__ import annotations

import json
import os
from dataclasses import replace

import pytest

from relman.transaction.record import RunRecord, from_json, to_json
from relman.transaction.runstate import (
    Adopted,
    Gone,
    IllegalEvent,
    Instance,
    KeptWarm,
    Relinked,
    Retired,
    Role,
    RunState,
    Settled,
    Started,
    Switch,
    SwitchedBack,
    SwitchedTo,
    advance,
    on_probation,
    warm_left,
)

AT = 1_000.0
V2 = Switch(release="v2", at=AT, until=AT + 300)


def live(release: str, switch: Switch = V2, **fields) -> RunState:
    return RunState(linked=release, instances=(Instance(f"{release}.1", release, Role.LIVE),),
                    switch=switch, **fields)


@pytest.mark.parametrize(
    ("state", "now", "window", "expected"),
    [
        (live("v2"), AT + 10, 300, True),
        (live("v2"), AT, 300, True),  # the moment of the switch
        (live("v2"), AT + 300, 300, False),  # the window is half-open
        (live("v2"), AT + 301, 300, False),
        (live("v1"), AT + 10, 300, False),  # another release is live: not its switch
        (RunState(linked="v2", switch=V2), AT + 10, 300, True),  # its server crashed
        (RunState(switch=V2), AT + 10, 300, False),  # nothing linked
        (live("v2", replace(V2, settled=True)), AT + 10, 300, False),
        (RunState(), AT, 300, False),  # nothing switched yet
        (live("v2"), AT + 10, 0, False),  # verify_window = 0 turns it off
        (live("v2"), AT - 5, 300, False),  # the clock went back: no verdict from it
        (live("v2"), AT + 100, 60, False),  # a reload shortened the window: it is over
        (live("v2"), AT + 30, 60, True),
        (live("v2"), AT + 400, 3600, False),  # a reload widened it: what ran out stays out
        (live("v2"), AT + 200, 3600, True),  # ... and what did not, keeps its own end
        (live("v2", Switch(release="v2", at=AT)), AT + 1, 300, False),  # no end recorded
    ],
)
def test_on_probation(state, now, window, expected):
    assert on_probation(state, now, window) is expected


WARM = RunState(instances=(Instance("v2.1", "v2", Role.LIVE), Instance("v1.3", "v1", Role.WARM)),
                warm_until=AT + 60)


@pytest.mark.parametrize(
    ("state", "name", "now", "expected"),
    [
        (WARM, "v1.3", AT, 60.0),
        (WARM, "v1.3", AT + 59, 1.0),
        (WARM, "v1.3", AT + 61, 0.0),  # over: stop it
        (WARM, "v1.2", AT, 0.0),  # another generation of the release: nobody kept it
        (WARM, "v2.1", AT, 0.0),  # the live one
        (RunState(), "v1.3", AT, 0.0),
    ],
)
def test_warm_left(state, name, now, expected):
    assert warm_left(state, name, now) == pytest.approx(expected)


def run(*events, state: RunState | None = None, now: float = AT) -> RunState:
    state = state or RunState()
    for event in events:
        state = advance(state, event, now)
    return state


def test_a_deploy_switches_and_opens_a_probation():
    """The first switch links the release and opens its window; the next deploy's switch
    retires the old instance and opens a new window."""
    state = run(Started("v1.1", "v1"), SwitchedTo("v1.1", window=300))
    assert (state.live, state.linked) == (Instance("v1.1", "v1", Role.LIVE), "v1")
    assert state.switch == Switch(release="v1", at=AT, until=AT + 300)
    state = run(Started("v2.1", "v2"), SwitchedTo("v2.1", window=300), state=state, now=AT + 5)
    assert state.get("v1.1") == Instance("v1.1", "v1", Role.RETIRING)
    assert state.switch == Switch(release="v2", at=AT + 5, until=AT + 305)


def test_a_restart_or_a_start_after_a_crash_is_no_new_switch():
    """Fresh processes for the live release keep its switch (and its probation's end); so
    does starting the linked release again after its server crashed."""
    state = run(Started("v2.1", "v2"), SwitchedTo("v2.1", window=300))
    restarted = run(Started("v2.2", "v2"), SwitchedTo("v2.2", window=300), state=state,
                    now=AT + 50)
    assert restarted.switch == state.switch
    crashed = run(Gone("v2.2"), state=restarted)
    assert crashed.live is None
    assert crashed.linked == "v2"
    again = run(Started("v2.3", "v2"), SwitchedTo("v2.3", window=300), state=crashed,
                now=AT + 60)
    assert again.switch == state.switch


def test_an_automatic_rollback_switch_is_settled_from_the_start():
    state = run(Started("v2.1", "v2"), SwitchedTo("v2.1", window=300),
                Started("v1.2", "v1"), SwitchedTo("v1.2", window=300, settled=True))
    assert state.switch.settled
    assert not on_probation(state, AT + 1, 300)


def test_a_switch_back_restores_the_switch_before():
    """A swap that failed after its switch puts the old instance and the old switch back:
    a switch back is no new switch."""
    before = run(Started("v1.1", "v1"), SwitchedTo("v1.1", window=300))
    failed = run(Started("v2.1", "v2"), SwitchedTo("v2.1", window=300), state=before,
                 now=AT + 9)
    back = run(SwitchedBack("v1.1", before.linked, before.switch), state=failed)
    assert back.live == Instance("v1.1", "v1", Role.LIVE)
    assert back.get("v2.1") == Instance("v2.1", "v2", Role.RETIRING)
    assert (back.linked, back.switch) == (before.linked, before.switch)
    first = run(Started("v1.1", "v1"), SwitchedTo("v1.1", window=300))
    assert run(SwitchedBack(None, "", Switch()), state=first).live is None


def test_only_one_instance_is_warm_and_its_window_ends_with_it():
    state = run(Started("v1.1", "v1"), SwitchedTo("v1.1", window=300),
                Started("v2.1", "v2"), SwitchedTo("v2.1", window=300), KeptWarm("v1.1", 60))
    assert (state.warm, state.warm_until) == (Instance("v1.1", "v1", Role.WARM), AT + 60)
    state = run(Started("v3.1", "v3"), SwitchedTo("v3.1", window=300), KeptWarm("v2.1", 60),
                state=state, now=AT + 10)
    assert state.warm == Instance("v2.1", "v2", Role.WARM)
    assert state.get("v1.1") == Instance("v1.1", "v1", Role.RETIRING)  # to be stopped
    assert state.warm_until == AT + 70
    reused = run(SwitchedTo("v2.1", window=300), state=state, now=AT + 20)
    assert (reused.warm, reused.warm_until) == (None, 0.0)  # the rollback took it
    cooled = run(Retired("v2.1"), Gone("v2.1"), state=state)
    assert (cooled.warm, cooled.warm_until) == (None, 0.0)
    # A restarted daemon keeps the deadline it found, however long adoption took.
    kept = run(KeptWarm("v2.1", 30, until=AT + 70), state=state, now=AT + 45)
    assert kept.warm_until == AT + 70


def test_settled_and_relinked():
    """Settling names the switch it is for: an older switch's rollback settles nothing."""
    state = run(Started("v2.1", "v2"), SwitchedTo("v2.1", window=300))
    assert run(Settled(("v2", AT - 1)), state=state) == state
    assert run(Settled(("v2", AT)), state=state).switch.settled
    assert run(Relinked("v1"), state=state).linked == "v1"


def test_adoption_fixes_roles_and_adds_the_unrecorded():
    state = run(Started("v1.1", "v1"), SwitchedTo("v1.1", window=300))
    state = run(Adopted("v1.1", "v1", Role.RETIRING), Adopted("v1.2", "v1", Role.LIVE),
                state=state)
    assert state.live == Instance("v1.2", "v1", Role.LIVE)
    assert state.get("v1.1") == Instance("v1.1", "v1", Role.RETIRING)


def test_a_warm_instance_taken_over_as_a_candidate_is_warm_no_more():
    """rollback --prepare: the warm instance becomes the candidate; its window is over (no
    warm instance, nothing left of it), and a switch to it makes it live."""
    state = run(Started("v1.1", "v1"), SwitchedTo("v1.1", window=300),
                Started("v2.1", "v2"), SwitchedTo("v2.1", window=300), KeptWarm("v1.1", 60),
                Adopted("v1.1", "v1", Role.CANDIDATE))
    assert state.get("v1.1") == Instance("v1.1", "v1", Role.CANDIDATE)
    assert (state.warm, state.warm_until) == (None, 0.0)
    assert warm_left(state, "v1.1", AT) == 0.0
    switched = run(SwitchedTo("v1.1", window=300), state=state, now=AT + 5)
    assert switched.live == Instance("v1.1", "v1", Role.LIVE)
    assert switched.get("v2.1") == Instance("v2.1", "v2", Role.RETIRING)


@pytest.mark.parametrize("event", [SwitchedTo("nope.1", window=1), KeptWarm("nope.1", 1),
                                   SwitchedBack("nope.1", "", Switch())])
def test_events_about_unknown_instances_are_bugs(event):
    with pytest.raises(IllegalEvent):
        run(event)
    with pytest.raises(IllegalEvent, match="twice"):
        run(Started("v1.1", "v1"), Started("v1.1", "v1"))


def test_gone_of_an_unknown_instance_changes_nothing():
    assert run(Gone("v9.1"), Retired("v9.1")) == RunState()


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_the_record_round_trips_and_keeps_time_from_its_clock(tmp_path):
    """Every change is written atomically; a new RunRecord (the next daemon) reads it; the
    probation's times come from the injected clock."""
    clock = Clock(AT)
    record = RunRecord(tmp_path / "run.json", clock=clock)
    assert record.state == RunState()
    assert not (tmp_path / "run.json").exists()
    record.submit(Started("v1.1", "v1"))
    clock.now = AT + 42
    record.submit(SwitchedTo("v1.1", window=300))
    again = RunRecord(tmp_path / "run.json")
    assert again.state == record.state
    assert again.state.switch == Switch(release="v1", at=AT + 42, until=AT + 342)
    assert from_json(to_json(record.state)) == record.state
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_an_unchanged_record_is_not_rewritten(tmp_path):
    record = RunRecord(tmp_path / "run.json", clock=Clock(AT))
    record.submit(Relinked("v1"))
    os.utime(tmp_path / "run.json", ns=(1, 1))
    record.submit(Relinked("v1"))
    assert (tmp_path / "run.json").stat().st_mtime_ns == 1


def test_on_change_is_called_for_each_change_only(tmp_path):
    """on_change (what the live check sleeps on between probations) is called once per
    change of the state, and not for an event that changes nothing."""
    record = RunRecord(tmp_path / "run.json", clock=Clock(AT))
    seen: list[RunState] = []
    record.on_change = lambda: seen.append(record.state)
    record.submit(Started("v1.1", "v1"))
    record.submit(SwitchedTo("v1.1", window=300))
    record.submit(Relinked("v1"))
    record.submit(Relinked("v1"))
    assert len(seen) == 2
    assert seen[-1].switch.release == "v1"


def test_an_older_daemons_switch_json_is_taken_in(tmp_path):
    """state/switch.json (release, switch time, window end, settled, warm release and its
    deadline) becomes the record, written as run.json, and goes: the warm release's newest
    recorded generation is warm."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    for name in ("v1.1.pid", "v1.2.pid", "v1.10.pid"):
        (run_dir / name).write_text("{}")
    legacy = tmp_path / "switch.json"
    legacy.write_text(json.dumps({"release": "v2", "at": AT, "until": AT + 300,
                                  "settled": False, "warm": "v1", "warm_until": AT + 60}))
    record = RunRecord(tmp_path / "run.json", legacy=legacy, run_dir=run_dir)
    assert record.state.switch == V2
    assert (record.state.warm, record.state.warm_until) == (
        Instance("v1.10", "v1", Role.WARM), AT + 60)
    assert not legacy.exists(), "read once: a lost run.json never brings it back"
    assert RunRecord(tmp_path / "run.json", legacy=legacy, run_dir=run_dir).state == \
        record.state


@pytest.mark.parametrize(
    "content",
    ["", "{", "[1, 2]", '"v2"', json.dumps({"switch": {"release": "v2", "at": "soon"}}),
     json.dumps({"instances": [{"name": "v1.1"}]}),
     json.dumps({"instances": [{"name": "v1.1", "release": "v1", "role": "king"}]})],
)
def test_an_unreadable_record_starts_empty_and_is_set_aside(tmp_path, content):
    """A damaged run.json costs the probation and the warm window, nothing else: the daemon
    starts, and adoption finds what runs. The file is kept as run.json.corrupt-<ts>."""
    path = tmp_path / "run.json"
    path.write_text(content)
    assert RunRecord(path).state == RunState()
    assert not path.exists()
    (aside,) = tmp_path.glob("run.json.corrupt-*")
    assert aside.read_text() == content


def test_a_refused_write_is_a_warning_unless_strict(tmp_path):
    """Supervision goes on when the record cannot be written (the state in memory is the
    daemon's); a job's strict submit raises, and the next change writes everything."""
    path = tmp_path / "run.json"
    record = RunRecord(path, clock=Clock(AT))
    path.mkdir()  # os.replace onto a directory fails: IsADirectoryError
    record.submit(Started("v1.1", "v1"))
    assert record.state.get("v1.1") is not None
    with pytest.raises(IsADirectoryError):
        record.submit(SwitchedTo("v1.1", window=300), strict=True)
    path.rmdir()
    record.submit(Relinked("v1"))
    assert RunRecord(path).state == record.state

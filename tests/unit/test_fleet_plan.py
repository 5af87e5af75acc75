"""The fleet coordinator's decisions (relman/fleet/plan.py), the merge of the hosts' answers
(relman/fleet/views.py) and the final table (relman/fleet/report.py): pure, table-tested."""

from __future__ import annotations

from typing import Any

import pytest

from relman.config_fleet import FleetConfig
from relman.errors import UsageError
from relman.fleet import plan
from relman.fleet.plan import TRANSITIONS, HostOutcome, HostRecord, IllegalTransition
from relman.fleet.remote import Answer
from relman.fleet.report import make_report, render_report
from relman.fleet.views import merge_releases, render_releases, render_status, status_rows

HOSTS = ("a@h1", "a@h2", "a@h3", "a@h4", "a@h5")


def fleet(**kw: Any) -> FleetConfig:
    return FleetConfig(**{"hosts": HOSTS, **kw})


@pytest.mark.parametrize(("kw", "hosts", "waves"), [
    ({}, HOSTS, [HOSTS]),
    ({"strategy": "rolling"}, HOSTS[:3], [("a@h1",), ("a@h2",), ("a@h3",)]),
    ({"strategy": "rolling", "batch": 2}, HOSTS, [HOSTS[:2], HOSTS[2:4], HOSTS[4:]]),
    ({"canary": 1}, HOSTS, [HOSTS[:1], HOSTS[1:]]),
    ({"canary": 2, "strategy": "rolling", "batch": 2}, HOSTS,
     [HOSTS[:2], HOSTS[2:4], HOSTS[4:]]),
    # fewer hosts to switch than canaries (the others live already): one is left to follow
    ({"canary": 3}, HOSTS[:2], [HOSTS[:1], HOSTS[1:2]]),
    ({"canary": 1}, HOSTS[:1], [HOSTS[:1]]),
    ({}, (), []),
])
def test_switch_waves(kw: dict[str, Any], hosts: tuple[str, ...],
                      waves: list[tuple[str, ...]]) -> None:
    assert plan.switch_waves(hosts, fleet(**kw)) == waves


def test_keep_warm_covers_the_canary_watch_and_every_wave() -> None:
    assert plan.keep_warm_seconds(fleet(), 1) == plan.SECONDS_PER_WAVE + plan.WARM_MARGIN
    with_canary = plan.keep_warm_seconds(fleet(canary=1, canary_seconds=120), 2)
    assert with_canary == 120 + 2 * plan.SECONDS_PER_WAVE + plan.WARM_MARGIN
    assert plan.candidates_must_last(fleet(canary=1, canary_seconds=120), 2) == \
        120 + 2 * plan.SECONDS_PER_WAVE + plan.EXPIRY_MARGIN
    # canary_seconds counts only with a canary
    assert plan.keep_warm_seconds(fleet(canary_seconds=120), 1) == \
        plan.keep_warm_seconds(fleet(), 1)


@pytest.mark.parametrize(("release_host", "reachable", "chosen"), [
    ("", HOSTS, "a@h1"),
    ("a@h3", HOSTS, "a@h3"),
    ("", HOSTS[1:], None),  # the first host is unreachable: no silent move
    ("a@h3", ("a@h1", "a@h3"), "a@h3"),
])
def test_release_host(release_host: str, reachable: tuple[str, ...], chosen: str | None
                      ) -> None:
    assert plan.release_host(fleet(release_host=release_host), reachable) == chosen


def test_release_host_matches_the_host_however_it_is_spelled() -> None:
    config = FleetConfig(hosts=("deploy@web1:22", "deploy@web2"), release_host="deploy@web1:22")
    assert plan.release_host(config, ["deploy@web1:22", "deploy@web2"]) == "deploy@web1:22"


@pytest.mark.parametrize(("targets", "live", "agreed"), [
    ({"h1": "A", "h2": "A"}, {"h1": "B", "h2": "B"}, "A"),
    # h2 rolled back already (a rerun) and has nothing before A: A is live there
    ({"h1": "A", "h2": None}, {"h1": "B", "h2": "A"}, "A"),
])
def test_rollback_target_agreed(targets: dict[str, str | None], live: dict[str, str | None],
                                agreed: str) -> None:
    assert plan.agreed_rollback_target(targets, live) == agreed


@pytest.mark.parametrize(("targets", "live", "says"), [
    ({"h1": "A", "h2": "C"}, {"h1": "B", "h2": "B"}, "h1 live B -> A, h2 live B -> C"),
    ({"h1": None, "h2": None}, {"h1": "B", "h2": "B"}, "no host has a release"),
    ({"h1": "A", "h2": None}, {"h1": "B", "h2": "B"}, "h2 live B -> none"),
    # h2 rolled back already, and its target is now B: A or B? The user names it.
    ({"h1": "A", "h2": "B"}, {"h1": "B", "h2": "A"}, "h1 live B -> A, h2 live A -> B"),
])
def test_rollback_target_disagreement_is_a_usage_error(
        targets: dict[str, str | None], live: dict[str, str | None], says: str) -> None:
    with pytest.raises(UsageError, match=says) as e:
        plan.agreed_rollback_target(targets, live)
    assert e.value.exit_code == 2


def status(live: str = "R", healthy: bool = True, restarts: int = 0, **kw: Any
           ) -> dict[str, Any]:
    return {"live": live, "health": {"healthy": healthy, "detail": "200" if healthy else "502"},
            "servers": [{"live": True, "process": "web", "restarts": restarts},
                        {"live": True, "process": "worker", "restarts": 9}], **kw}


@pytest.mark.parametrize(("answer", "before", "trouble"), [
    (status(), 0, None),
    (status(restarts=1), 1, None),
    (None, 0, "no answer"),
    (status(live="OLD"), 0, "live release is OLD"),
    (status(live=None), 0, "live release is none"),
    (status(healthy=False), 0, "unhealthy: 502"),
    (status(crash_loop="web: 5 restarts in 60s"), 0, "crash loop"),
    ({"live": "R", "health": "odd"}, 0, "unhealthy"),  # odd answers are no crash
    ({"live": "R", "health": {"healthy": True}, "servers": ["x", {"restarts": "2"}]}, 0, None),
    (status(restarts=2), 0, "crashed (2 restart(s)"),
])
def test_canary_trouble(answer: dict[str, Any] | None, before: int, trouble: str | None
                        ) -> None:
    found = plan.canary_trouble("R", answer, before)
    assert (found is None) if trouble is None else (trouble in (found or "")), found


def test_every_outcome_has_its_transitions_and_the_ends_are_final() -> None:
    assert set(TRANSITIONS) == set(HostOutcome)
    for end in (HostOutcome.UNCHANGED, HostOutcome.SWITCHED_BACK, HostOutcome.ABORTED,
                HostOutcome.BACK_FAILED, HostOutcome.SWITCH_FAILED):
        assert not TRANSITIONS[end]
    record = HostRecord("h1")
    record.move(HostOutcome.PREPARED)
    with pytest.raises(IllegalTransition, match="prepared -> unchanged"):
        record.move(HostOutcome.UNCHANGED)


def answer(host: str, result: Any = None, code: int = 0, error: str | None = None,
           said: tuple[str, ...] = ()) -> Answer:
    return Answer(host, code, result, {"message": error} if error else None, 0.1, said)


def test_answer_reasons() -> None:
    lost = answer("h", code=255, said=("ssh: connect to host h port 22: Connection refused",))
    assert lost.unreachable
    assert lost.reason.startswith("ssh exit 255: ssh: connect")
    refused = answer("h", code=2, error="switch X: no release is prepared")
    assert not refused.unreachable
    assert refused.reason == "switch X: no release is prepared"
    assert answer("h", code=0).reason.startswith("no answer from relman")


def test_status_rows_flag_mixed_releases_and_unreachable_hosts() -> None:
    rows = status_rows([answer("h1", status(live="A")), answer("h2", status(live="B")),
                        answer("h3", code=255, said=("Connection refused",))])
    assert rows["mixed"]
    assert rows["live"] == {"A": ["h1"], "B": ["h2"]}
    assert rows["problems"][0] == "MIXED: A on h1; B on h2"
    assert "h3: unreachable: ssh exit 255: Connection refused" in rows["problems"]
    text = render_status(rows)
    assert "UNREACHABLE" in text
    assert text.splitlines()[-1].startswith("MIXED")


def test_status_rows_of_a_uniform_healthy_fleet() -> None:
    rows = status_rows([answer("h1", status()), answer("h2", status())])
    assert not rows["mixed"]
    assert rows["problems"] == []
    assert render_status(rows).splitlines()[-1] == "all 2 hosts live on R"


def test_merge_releases_marks_each_host() -> None:
    merged = merge_releases(["h1", "h2", "h3"], {
        "h1": answer("h1", [{"id": "A", "ref": "v1", "state": "built", "rollback_target": True},
                            {"id": "B", "ref": "v2", "state": "built", "live": True}]),
        "h2": answer("h2", [{"id": "B", "ref": "v2", "state": "built", "live": True}]),
        "h3": answer("h3", code=3, error="the daemon is not running"),
    })
    assert merged["releases"] == [
        {"release": "A", "ref": "v1", "hosts": {"h1": "target", "h2": "-"}},
        {"release": "B", "ref": "v2", "hosts": {"h1": "live", "h2": "live"}},
    ]
    assert merged["errors"] == {"h3": "the daemon is not running"}
    text = render_releases(merged, ["h1", "h2", "h3"])
    assert text.splitlines()[0].split() == ["RELEASE", "REF", "h1", "h2"]
    assert text.splitlines()[-1] == "h3: the daemon is not running"


def test_report_table_and_json() -> None:
    ok = HostRecord("h1", release="R", prepare_s=3.25, switch_s=0.4)
    ok.move(HostOutcome.PREPARED)
    ok.move(HostOutcome.SWITCHED)
    same = HostRecord("h2", release="R")
    same.move(HostOutcome.UNCHANGED, "live already")
    report = make_report("deploy", "v2", "R", "deployed", "", False, [ok, same])
    lines = render_report(report).splitlines()
    assert lines[0].split() == ["HOST", "RELEASE", "PREPARE", "SWITCH", "RESULT"]
    assert lines[1].split() == ["h1", "R", "3.2s", "0.4s", "switched"]
    assert lines[2].split()[-3:] == ["unchanged:", "live", "already"]
    assert lines[-1] == "deployed v2 as R on 1 host(s)"
    data = report.to_json()
    assert data["outcome"] == "deployed"
    assert not data["mixed"]
    assert data["hosts"][0] == {"host": "h1", "result": "switched", "release": "R",
                                "previous": None, "prepare_s": 3.25, "switch_s": 0.4,
                                "detail": "", "ssh_sessions": 0}


def test_a_mixed_report_says_so_on_its_last_line() -> None:
    stuck = record("h1", HostOutcome.PREPARED, HostOutcome.SWITCHED, HostOutcome.BACK_FAILED)
    report = make_report("deploy", "v2", "R", "failed", "switch failed on h2",
                         plan.left_mixed([stuck], True), [stuck])
    assert report.mixed
    assert "MIXED" in render_report(report).splitlines()[-1]


def record(host: str, *moves: HostOutcome, release: str = "R", expires_at: float = 1000.0
           ) -> HostRecord:
    r = HostRecord(host, release=release, expires_at=expires_at)
    for outcome in moves:
        r.move(outcome)
    return r


P, U, X, F = (HostOutcome.PREPARED, HostOutcome.UNCHANGED, HostOutcome.UNREACHABLE,
              HostOutcome.PREPARE_FAILED)


@pytest.mark.parametrize(("hosts", "kw", "says"), [
    ([("h1", P), ("h2", P)], {}, ""),
    ([("h1", U), ("h2", P)], {}, ""),  # a rerun: h1 switched in the killed run
    ([("h1", P), ("h2", F)], {}, "prepare failed on h2: nobody switched"),
    ([("h1", P), ("h2", X)], {}, "unreachable: h2: nobody switched"),
    ([("h1", P), ("h2", X)], {"allow_unreachable": True}, ""),
    # the release host lost during its own prepare: never "deployed" without it
    ([("h1", X), ("h2", P)], {"allow_unreachable": True}, "release host h1 did not prepare"),
    ([("h1", P), ("h2", P)], {"stopping": True}, "stopped: nobody switched"),
    ([("h1", X), ("h2", X)], {"allow_unreachable": True, "release_host": None},
     "no host to switch"),
    ([("h1", P), ("h2", P, "R2")], {}, "prepared different releases (h1 R, h2 R2)"),
    ([("h1", P), ("h2", P, "R", 50.0)], {}, "candidates on h2 expire before the switch"),
])
def test_why_not_switch(hosts: list[tuple[Any, ...]], kw: dict[str, Any], says: str) -> None:
    records = [record(h[0], h[1], release=h[2] if len(h) > 2 else "R",
                      expires_at=h[3] if len(h) > 3 else 1000.0) for h in hosts]
    args = {"release_host": "h1", "allow_unreachable": False, "stopping": False,
            "must_last": 60.0, "now": 0.0, **kw}
    why = plan.why_not_switch(records, **args)
    assert (why == "") if not says else (says in why), why


def test_outcome_and_mixed() -> None:
    switched = record("h1", P, HostOutcome.SWITCHED)
    same = record("h2", U)
    assert plan.outcome_of("deploy", [switched, same], "") == "deployed"
    assert plan.outcome_of("rollback", [switched], "") == "rolled-back"
    assert plan.outcome_of("deploy", [same], "") == "unchanged"
    assert plan.outcome_of("deploy", [switched], "why") == "failed"
    # a failed rerun leaves h2 on the release it found there: mixed, and said
    assert plan.left_mixed([same, record("h3", F)], failed=True)
    assert not plan.left_mixed([same, record("h3", P, HostOutcome.SWITCHED)], failed=False)
    assert plan.left_mixed([record("h4", P, HostOutcome.UNKNOWN)], failed=True)

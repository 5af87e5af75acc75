"""The fleet coordinator's decisions (relman/fleet/plan.py), the merge of the hosts' answers
(relman/fleet/views.py) and the final table (relman/fleet/report.py): pure, table-tested."""

from __future__ import annotations

from typing import Any

import pytest

from relman.config_fleet import FleetConfig
from relman.errors import UsageError
from relman.fleet import plan
from relman.fleet.plan import TRANSITIONS, HostOutcome
from relman.fleet.remote import Answer
from relman.fleet.report import FleetReport, HostRecord, render_report
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
    assert plan.keep_warm_seconds(fleet(), 1) == plan.WARM_PER_WAVE + plan.WARM_MARGIN
    with_canary = plan.keep_warm_seconds(fleet(canary=1, canary_seconds=120), 2)
    assert with_canary == 120 + 2 * plan.WARM_PER_WAVE + plan.WARM_MARGIN
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
    ({"h1": "A", "h2": "C"}, {"h1": "B", "h2": "B"}, "h1 -> A, h2 -> C"),
    ({"h1": None, "h2": None}, {"h1": "B", "h2": "B"}, "no host has a release"),
    ({"h1": "A", "h2": None}, {"h1": "B", "h2": "B"}, "h2 -> none"),
    # h2 rolled back already, and its target is now B: A or B? The user names it.
    ({"h1": "A", "h2": "B"}, {"h1": "B", "h2": "A"}, "h1 -> A, h2 -> B"),
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
    with pytest.raises(AssertionError, match="no transition"):
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
    report = FleetReport("deploy", "v2", "R", "deployed", "", (ok, same))
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
                                "detail": ""}


def test_a_report_with_a_host_not_switched_back_says_the_fleet_is_mixed() -> None:
    stuck = HostRecord("h1", release="R")
    stuck.move(HostOutcome.PREPARED)
    stuck.move(HostOutcome.SWITCHED)
    stuck.move(HostOutcome.BACK_FAILED, "rollback A: exit 3")
    report = FleetReport("deploy", "v2", "R", "failed", "switch failed on h2", (stuck,))
    assert report.mixed
    assert "MIXED" in render_report(report).splitlines()[-1]

"""`relman fleet deploy` when things go wrong (issue 10, Tests), on the simulated fleet under
load through the front nginx, with 0 failed requests: a sick host (nobody switches), a host
failing its switch (everybody goes back), an unreachable host, and a coordinator SIGKILLed
after the prepare phase (the candidates stop by themselves) or in the middle of the switch
(running it again converges)."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import psutil
import pytest

from testing.fleet import Fleet, Host
from testing.fleet_cli import (
    Coordinator,
    assert_fleet_on,
    fleet_run,
    fleet_toml,
    front_versions,
    host_config,
    idle,
    is_canary_watch,
    live_release,
    relman,
    results,
    under_load,
)
from testing.git import release_version
from testing.waiting import wait_until

pytestmark = pytest.mark.integration


def before(fleet: Fleet) -> tuple[str, str]:
    """The release every host serves, and the version the front nginx gets."""
    return live_release(fleet), front_versions(fleet)[fleet.hosts[0].name]


def history(host: Host, event: str, release: str) -> list[dict[str, Any]]:
    return [e for e in host.json("history", "--event", event) if e.get("release") == release]


def killed_in_the_canary_watch(fleet: Fleet, config: Path, ref: str) -> str:
    """`fleet deploy REF` (canary 1) SIGKILLed once it watches the canary, under load; the
    release the canary now runs. Its ssh sessions, which go on without it, have ended."""
    with under_load(fleet):
        run = Coordinator(config, "deploy", ref)
        run.wait_for(is_canary_watch, "the canary watch")
        _gone, alive = psutil.wait_procs(run.kill9(), timeout=60)
        assert not alive, alive
    return str(idle(fleet.hosts[0])["live"])


def fail_import(tables: dict[str, Any]) -> None:
    """A host's config whose next server fails at import (the sample app's
    SAMPLE_FAIL_IMPORT), so that its health check fails."""
    tables["server"]["env"] = {"SAMPLE_FAIL_IMPORT": "1"}


def test_one_sick_host_and_nobody_switches(settled_fleet: Fleet, tmp_path: Path) -> None:
    """The second host's candidate fails at import (SAMPLE_FAIL_IMPORT in its [server] env,
    that host's config only), so its health check fails: exit 1, every prepared candidate
    aborted, every host still on the old release."""
    f = settled_fleet
    old, old_version = before(f)
    release_version(f.repo, "ft-sick")
    sick = f.hosts[1]

    with host_config(sick, fail_import):
        code, report, run = fleet_run(f, fleet_toml(tmp_path / "fleet.toml", f),
                                      "deploy", "ft-sick")
    assert code == 1, run.said()
    assert report["outcome"] == "failed"
    assert report["reason"].startswith(f"prepare failed on {sick.destination}: nobody "
                                       "switched"), report
    first, second, third = f.config.hosts
    assert results(report) == {first: "aborted", second: "prepare-failed", third: "aborted"}
    assert_fleet_on(f, old, old_version)
    for host in f.hosts:
        assert not history(host, "deployed", report["release"]), host.name
    assert run.error is not None
    assert (run.error["code"], run.error["exit_code"]) == ("fleet-failed", 1)


def test_a_host_failing_its_switch_sends_everybody_back(settled_fleet: Fleet,
                                                         tmp_path: Path) -> None:
    """While the canary is watched, the candidate of a second-wave host is SIGKILLed, so
    its switch fails (it stays on its release); the coordinator switches the hosts that
    switched back to the release they ran: exit 1, every host on the old release."""
    f = settled_fleet
    old, old_version = before(f)
    release_version(f.repo, "ft-switch-fails")
    config = fleet_toml(tmp_path / "fleet.toml", f, canary=1, canary_seconds=8)
    victim = f.hosts[1]
    with under_load(f):
        run = Coordinator(config, "deploy", "ft-switch-fails")
        run.wait_for(is_canary_watch, "the canary watch")
        status = idle(victim)
        candidate = next(s for s in status["servers"]
                         if s["release"] == status["prepared"] and not s["live"])
        # The candidate runs in a session of its own (the host's daemon, which this test's
        # fleet started, spawned it): its process group is its pid.
        assert os.getpgid(candidate["pid"]) == candidate["pid"]
        os.killpg(candidate["pid"], signal.SIGKILL)
        code, report = run.finish()
    assert code == 1, run.said()
    assert report is not None
    assert report["reason"] == f"switch failed on {victim.destination}", report
    first, second, third = f.config.hosts
    assert results(report) == {first: "switched-back", second: "switch-failed",
                               third: "switched-back"}, report
    assert not report["mixed"]
    assert_fleet_on(f, old, old_version)


def is_a_build(line: dict[str, Any]) -> bool:
    return bool(line["step"] == "built")


@pytest.mark.parametrize(("sig", "at", "when"), [
    (signal.SIGTERM, is_canary_watch, "the canary watch"),
    (signal.SIGINT, is_a_build, "a host's build"),  # Ctrl-C
])
def test_a_coordinator_stopped_by_a_signal_puts_the_fleet_back(
        settled_fleet: Fleet, tmp_path: Path, sig: signal.Signals,
        at: Callable[[dict[str, Any]], bool], when: str) -> None:
    """SIGTERM while the canary is watched, or SIGINT as soon as a host has built: the
    coordinator says it stops, lets what runs finish, switches the canary back if it
    switched and aborts the other candidates: exit 1, every host on the old release
    (ANCHORS.md: a Ctrl-C in the other tools leaves a half-done deploy)."""
    f = settled_fleet
    old, old_version = before(f)
    release_version(f.repo, f"ft-{sig.name.lower()}")
    config = fleet_toml(tmp_path / "fleet.toml", f, canary=1, canary_seconds=30)
    with under_load(f):
        run = Coordinator(config, "deploy", f"ft-{sig.name.lower()}")
        run.wait_for(at, when)
        run.proc.send_signal(sig)  # the coordinator this test started, by its pid
        code, report = run.finish()
    assert code == 1, run.said()
    assert report is not None
    assert any(p["step"] == "stop" for p in run.progress), run.said()
    first, second, third = f.config.hosts
    if sig == signal.SIGTERM:
        assert report["reason"] == "stopped while watching the canary", report
        assert results(report) == {first: "switched-back", second: "aborted",
                                   third: "aborted"}
    else:  # nobody stays switched (on a slow box the canary may have switched first)
        assert set(results(report).values()) <= {"aborted", "switched-back"}, report
    assert_fleet_on(f, old, old_version)


def test_an_unreachable_host_stops_the_fleet_unless_allowed(settled_fleet: Fleet,
                                                            tmp_path: Path) -> None:
    """A [fleet] host that nothing answers (a user the sshd does not know: ssh exits 255):
    by default exit 1, reported unreachable, nobody switched; with --allow-unreachable the
    others switch and it exits 0."""
    f = settled_fleet
    old, old_version = before(f)
    release_version(f.repo, "ft-unreachable")
    nobody = f"relman-nosuch-user@127.0.0.1:{f.hosts[0].port}"
    config = fleet_toml(tmp_path / "fleet.toml", f, extra_hosts=[nobody])

    with under_load(f):  # as a person runs it: lines, then the table
        done = relman(config, "fleet", "deploy", "ft-unreachable")
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    table = lines.index(next(line for line in lines if line.startswith("HOST ")))
    assert lines[table].split() == ["HOST", "RELEASE", "PREPARE", "SWITCH", "RESULT"]
    assert all(line.split()[0] in (*f.config.hosts, nobody, "fleet")
               for line in lines[:table]), done.stdout
    rows = {line.split()[0]: line.split(None, 4)[4] for line in lines[table + 1:]}
    assert rows.keys() == {*f.config.hosts, nobody}, done.stdout
    assert all(rows[h] == "not-started" for h in f.config.hosts), done.stdout
    assert rows[nobody].startswith("unreachable: ssh exit 255: "), done.stdout
    assert "\r" not in done.stdout
    assert done.stderr.splitlines() == [
        f"relman: error: fleet deploy ft-unreachable: unreachable: {nobody}: nobody switched "
        "(--allow-unreachable deploys to the others)"]
    assert_fleet_on(f, old, old_version)

    code, report, run = fleet_run(f, config, "deploy", "ft-unreachable",
                                  "--allow-unreachable")
    assert code == 0, run.said()
    assert report["outcome"] == "deployed"
    assert results(report) == {**dict.fromkeys(f.config.hosts, "switched"),
                               nobody: "unreachable"}
    assert_fleet_on(f, report["release"], "ft-unreachable")


def test_a_coordinator_killed_after_prepare_leaves_candidates_that_expire(
        settled_fleet: Fleet, tmp_path: Path) -> None:
    """swap.prepare_timeout = 15 on the hosts; the coordinator is SIGKILLed once a host is
    prepared: within that timeout (and the time the others take to finish what they were
    asked) every candidate is gone by itself (prepare_expired), the live release
    unchanged."""
    f = settled_fleet
    old, old_version = before(f)
    release_version(f.repo, "ft-killed-prepared")

    def short_prepare(tables: dict[str, Any]) -> None:
        tables.setdefault("swap", {})["prepare_timeout"] = 15

    with ExitStack() as configs, under_load(f):
        for host in f.hosts:
            configs.enter_context(host_config(host, short_prepare))
        run = Coordinator(fleet_toml(tmp_path / "fleet.toml", f), "deploy",
                          "ft-killed-prepared")
        prepared = run.wait_for(lambda p: p["step"] == "prepared", "a host prepared")
        ssh_left = run.kill9()
        # Its ssh sessions go on (their own sessions): what they asked for ends on its own.
        _gone, alive = psutil.wait_procs(ssh_left, timeout=120)
        assert not alive, alive
        release = prepared["message"].split()[0]

        def all_expired() -> bool:
            return all(idle(h)["prepared"] is None for h in f.hosts)

        wait_until(all_expired, timeout=15 + 60, interval=0.5, what="the candidates to expire")
    assert_fleet_on(f, old, old_version)
    by_name = {h.destination: h for h in f.hosts}
    assert history(by_name[prepared["host"]], "prepared", release)
    for host in f.hosts:
        if history(host, "prepared", release):
            expired = history(host, "prepare_expired", release)
            assert [e["who"] for e in expired] == ["relman (swap.prepare_timeout)"], host.name
        assert not history(host, "deployed", release), host.name


def test_a_coordinator_killed_mid_switch_is_converged_by_running_it_again(
        settled_fleet: Fleet, tmp_path: Path) -> None:
    """canary 1: the coordinator is SIGKILLed while it watches the canary (host 1 switched,
    the others prepared): `fleet status` says MIXED (exit 1); the same `fleet deploy` again
    exits 0, host 1 unchanged (the same server) and the others switched."""
    f = settled_fleet
    release_version(f.repo, "ft-killed-switch")
    config = fleet_toml(tmp_path / "fleet.toml", f, canary=1, canary_seconds=30)
    first, *rest = f.hosts
    new = killed_in_the_canary_watch(f, config, "ft-killed-switch")
    first_pid = next(s["pid"] for s in idle(first)["servers"] if s["live"])
    assert all(idle(h)["prepared"] == new for h in rest)

    status = relman(config, "fleet", "status")
    assert status.returncode == 1, status.stdout + status.stderr
    assert "MIXED" in status.stdout

    code, report, again = fleet_run(f, config, "deploy", "ft-killed-switch")
    assert code == 0, again.said()
    assert report["release"] == new
    assert results(report) == {first.destination: "unchanged",
                               **{h.destination: "switched" for h in rest}}
    assert_fleet_on(f, new, "ft-killed-switch")
    assert next(s["pid"] for s in idle(first)["servers"] if s["live"]) == first_pid
    status = relman(config, "fleet", "status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert f"all 3 hosts live on {new}" in status.stdout


def test_a_failed_rerun_of_a_fleet_left_mixed_says_it_is_still_mixed(
        settled_fleet: Fleet, tmp_path: Path) -> None:
    """A coordinator SIGKILLed during the canary watch left host 1 on the new release; the
    rerun fails (host 2's new candidate does not boot): host 1 is "unchanged", the others
    on the old release, and the report says the fleet is mixed (exit 1). Once host 2 is
    fixed, the same command converges it."""
    f = settled_fleet
    old, _old_version = before(f)
    release_version(f.repo, "ft-rerun-fails")
    config = fleet_toml(tmp_path / "fleet.toml", f, canary=1, canary_seconds=30)
    first, sick, third = f.hosts
    new = killed_in_the_canary_watch(f, config, "ft-rerun-fails")
    sick.relman("abort", new, check=True)  # its candidate must start again, and fail

    with host_config(sick, fail_import):
        code, report, again = fleet_run(f, config, "deploy", "ft-rerun-fails")
    assert code == 1, again.said()
    assert results(report) == {first.destination: "unchanged",
                               sick.destination: "prepare-failed",
                               third.destination: "aborted"}
    assert [idle(h)["live"] for h in f.hosts] == [new, old, old]
    assert report["mixed"], report

    code, report, run = fleet_run(f, fleet_toml(tmp_path / "fleet.toml", f),
                                  "deploy", "ft-rerun-fails")
    assert code == 0, run.said()
    assert_fleet_on(f, new, "ft-rerun-fails")

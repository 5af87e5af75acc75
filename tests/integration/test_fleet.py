"""`relman fleet` end to end (issue 10, Tests): the real coordinator CLI, run as a user runs
it, drives the simulated fleet (testing/fleet.py: hosts as unix users with their own daemon,
behind one sshd and a front nginx) under load through the front nginx, with 0 failed
requests. This file: the strategies (together, rolling, canary), a fleet rollback and the
coordinator's bad input; test_fleet_failures.py: sick, failing, unreachable hosts and a
killed coordinator."""

from __future__ import annotations

import json
import os
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from testing.fleet import Fleet
from testing.fleet_cli import (
    Coordinator,
    assert_fleet_on,
    fleet_run,
    fleet_toml,
    front_versions,
    host_config,
    idle,
    index,
    is_canary_watch,
    live_release,
    relman,
    results,
    under_load,
)
from testing.git import release_version

pytestmark = pytest.mark.integration

#: progress steps that are the coordinator's own (host ""); every other line is a host's
COORDINATOR_STEPS = frozenset({"prepare", "switch", "canary", "recover", "stop"})


def test_together_every_host_switches_and_only_the_release_host_runs_the_release_phase(
        settled_fleet: Fleet, tmp_path: Path) -> None:
    """strategy together: every host switches to the release; only the first host (the
    release host) runs release.commands (each host has one that notes its release dir),
    the others skip them; every line names its host."""
    f = settled_fleet
    release_version(f.repo, "ft-together")

    def note_release_phase(tables: dict[str, Any]) -> None:
        tables["release"] = {"commands": [["sh", "-c", "pwd >> ../../release-phase.txt"]]}

    with ExitStack() as configs:
        for host in f.hosts:
            configs.enter_context(host_config(host, note_release_phase))
        code, report, run = fleet_run(f, fleet_toml(tmp_path / "fleet.toml", f),
                                      "deploy", "ft-together")
    assert code == 0, run.said()
    assert (report["outcome"], report["ref"]) == ("deployed", "ft-together")
    assert results(report) == dict.fromkeys(f.config.hosts, "switched")
    assert_fleet_on(f, report["release"], "ft-together")
    # each host's status, build, prepare and switch were lines of one `relman session`
    assert {h["host"]: h["ssh_sessions"] for h in report["hosts"]} == dict.fromkeys(
        f.config.hosts, 1)

    noted = {}
    for host in f.hosts:
        notes = host.root / "release-phase.txt"
        noted[host.destination] = notes.read_text().split() if notes.exists() else []
        notes.unlink(missing_ok=True)
    first, *others = f.config.hosts
    release_dir = str(f.hosts[0].root / "releases" / report["release"])
    assert noted == {first: [release_dir], **{h: [] for h in others}}
    released = {p["host"]: p["message"] for p in run.progress if p["step"] == "released"}
    assert released.keys() == set(f.config.hosts), released
    assert "skipped" not in released[first]
    assert all("release phase skipped" in released[h] for h in others), released
    for line in run.progress:
        if line["step"] not in COORDINATOR_STEPS:
            assert line["host"] in f.config.hosts, line
    assert {p["host"] for p in run.progress} - {""} == set(f.config.hosts)


def test_rolling_switches_one_wave_at_a_time(settled_fleet: Fleet, tmp_path: Path) -> None:
    """strategy rolling, batch 1: wave i of 3 switches host i, and only it, before the next
    wave starts; release_host names the third host, which alone runs the release phase."""
    f = settled_fleet
    release_version(f.repo, "ft-rolling")
    config = fleet_toml(tmp_path / "fleet.toml", f, strategy="rolling", batch=1,
                        release_host=f.config.hosts[2])
    code, report, run = fleet_run(f, config, "deploy", "ft-rolling")
    assert code == 0, run.said()
    assert results(report) == dict.fromkeys(f.config.hosts, "switched")
    assert_fleet_on(f, report["release"], "ft-rolling")

    progress = run.progress
    waves = [index(progress, "", "switch", f"wave {i} of 3: {h}")
             for i, h in enumerate(f.config.hosts, 1)]
    switched = [index(progress, h, "switched") for h in f.config.hosts]
    assert waves[0] < switched[0] < waves[1] < switched[1] < waves[2] < switched[2], (
        run.said())
    released = {p["host"]: p["message"] for p in progress if p["step"] == "released"}
    assert ["skipped" in released[h] for h in f.config.hosts] == [True, True, False], released


def test_canary_is_watched_before_the_rest_switch(settled_fleet: Fleet,
                                                  tmp_path: Path) -> None:
    """canary 1: the first host switches alone and is watched canary_seconds; only once it
    stayed healthy do the others switch, together."""
    f = settled_fleet
    release_version(f.repo, "ft-canary")
    config = fleet_toml(tmp_path / "fleet.toml", f, canary=1, canary_seconds=3)
    code, report, run = fleet_run(f, config, "deploy", "ft-canary")
    assert code == 0, run.said()
    assert results(report) == dict.fromkeys(f.config.hosts, "switched")
    assert_fleet_on(f, report["release"], "ft-canary")

    canary, *rest = f.config.hosts
    progress = run.progress
    watching = index(progress, "", "canary", f"watching {canary} for 3s")
    healthy = index(progress, "", "canary", "the canary hosts stayed healthy")
    second = index(progress, "", "switch", f"wave 2 of 2: {', '.join(rest)}")
    assert index(progress, canary, "switched") < watching < healthy < second, run.said()
    assert all(second < index(progress, h, "switched") for h in rest), run.said()


def test_a_sick_canary_is_switched_back_and_the_others_never_switch(
        settled_fleet: Fleet, tmp_path: Path) -> None:
    """canary 1: the canary's new release fails its health check while it is watched (an
    UNHEALTHY file in that host's release directory, which the sample app looks for on
    every /health): the coordinator switches it back to the release it ran and aborts the
    others' candidates: exit 1, every host on the old release."""
    f = settled_fleet
    old = live_release(f)
    old_version = front_versions(f)[f.hosts[0].name]
    release_version(f.repo, "ft-sick-canary")
    config = fleet_toml(tmp_path / "fleet.toml", f, canary=1, canary_seconds=30)
    canary = f.hosts[0]
    with under_load(f):
        run = Coordinator(config, "deploy", "ft-sick-canary")
        run.wait_for(is_canary_watch, "the canary watch")
        sick = canary.root / "releases" / str(idle(canary)["live"]) / "UNHEALTHY"
        sick.write_text("")
        os.chown(sick, canary.uid, canary.gid)
        try:
            code, report = run.finish()
        finally:
            sick.unlink()
    assert code == 1, run.said()
    assert report is not None
    assert report["reason"].startswith(f"canary {canary.destination} is sick: unhealthy"), (
        report)
    first, second, third = f.config.hosts
    assert results(report) == {first: "switched-back", second: "aborted", third: "aborted"}
    assert not report["mixed"]
    assert_fleet_on(f, old, old_version)


def test_fleet_rollback_takes_the_warm_release_back_on_every_host(
        settled_fleet: Fleet, tmp_path: Path) -> None:
    """After a fleet deploy, `fleet rollback` brings every host back to the release it ran,
    whose server was kept warm (the same pid serves again: no start); `fleet releases`
    then marks it live and the deployed one target on every host."""
    f = settled_fleet
    before = live_release(f)
    old_version = front_versions(f)[f.hosts[0].name]
    release_version(f.repo, "ft-rollback")
    config = fleet_toml(tmp_path / "fleet.toml", f)
    code, report, run = fleet_run(f, config, "deploy", "ft-rollback")
    assert code == 0, run.said()
    deployed = report["release"]
    warm = {}
    for host in f.hosts:
        servers = idle(host)["servers"]
        warm[host.name] = next(s["pid"] for s in servers
                               if s["release"] == before and s["state"] == "warm")

    code, report, run = fleet_run(f, config, "rollback")
    assert code == 0, run.said()
    assert (report["outcome"], report["release"]) == ("rolled-back", before)
    assert results(report) == dict.fromkeys(f.config.hosts, "switched")
    assert_fleet_on(f, before, old_version)
    for host in f.hosts:
        live = [s for s in idle(host)["servers"] if s["live"] and s["process"] == "web"]
        assert [s["pid"] for s in live] == [warm[host.name]], (host.name, live)

    shown = relman(config, "fleet", "releases")
    assert shown.returncode == 0, shown.stderr
    rows = {line.split()[0]: line.split()[2:] for line in shown.stdout.splitlines()}
    assert rows[before] == ["live"] * 3, shown.stdout
    assert rows[deployed] == ["target"] * 3, shown.stdout
    listed = relman(config, "--json", "fleet", "releases")
    marks = {r["release"]: r["hosts"] for r in json.loads(listed.stdout)["releases"]}
    assert marks[before] == dict.fromkeys(f.config.hosts, "live")
    assert marks[deployed] == dict.fromkeys(f.config.hosts, "target")


# -- bad input: nothing reaches a host ----------------------------------------------------

def test_a_config_without_fleet_exits_2_naming_the_file_and_key(tmp_path: Path) -> None:
    """`fleet deploy` with a config that has no [fleet]: exit 2, one line naming the file
    and the key."""
    config = tmp_path / "relman.toml"
    config.write_text('[app]\nname = "sample"\n')
    done = relman(config, "fleet", "deploy", "v1")
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        f"relman: error: {config}: fleet: required: `relman fleet` needs a [fleet] table"]


@pytest.mark.parametrize(("args", "said"), [
    (("--", "-x"), "relman: error: ref '-x': must not start with '-'"),
    (("-x",), "No such option '-x'"),
    (("v1", "extra"), "Got unexpected extra argument (extra)"),
])
def test_a_bad_ref_exits_2_before_any_host_is_asked(tmp_path: Path, args: tuple[str, ...],
                                                    said: str) -> None:
    """A ref that is no ref (`-x`, given after `--` or as an option) exits 2 with one line,
    before any ssh (the only host is one nothing answers on)."""
    config = tmp_path / "fleet.toml"
    config.write_text('[app]\nname = "sample"\n\n[fleet]\nhosts = ["nobody@127.0.0.1:1"]\n')
    done = relman(config, "fleet", "deploy", *args)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stdout == ""
    assert said in done.stderr
    assert "unreachable" not in done.stderr
    assert "Traceback" not in done.stderr

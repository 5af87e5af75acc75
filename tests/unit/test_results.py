"""The daemon's answers: typed both ways, the same JSON as before, and a clean error (exit 70)
for an answer this CLI cannot read."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest

from relman.errors import BadAnswer, DaemonBug, error_from_dict
from relman.journal import JournalEntry, Step
from relman.results import (
    AbortResult,
    BuildResult,
    DaemonInfo,
    DeployResult,
    Figures,
    Health,
    JobInfo,
    Pong,
    PrepareResult,
    Progress,
    PruneResult,
    RestartResult,
    Result,
    RollbackResult,
    ServerLine,
    StartResult,
    Status,
    StopResult,
)
from relman.views import render_status

RID = "20261123T031500Z-1a2b3c4"
FIGURES = Figures(workers=2, rss=48 * 2**20, cpu_percent=1.5, uptime=12.3)
SERVER = ServerLine(instance=f"{RID}.1", release=RID, pid=4242, state="live",
                    socket=f"/srv/shop/run/{RID}.1.sock", started=1_700_000_000.5, live=True,
                    figures=FIGURES)
STATUS = Status(
    app="shop",
    daemon=DaemonInfo(pid=100, version="1.0", figures=Figures(workers=0, rss=30 * 2**20,
                                                              cpu_percent=0.1, uptime=99.0)),
    live=RID, current=RID, rollback_target="20261122T031500Z-0000000",
    health=Health(status=200, detail="HTTP/1.1 200 OK", healthy=True),
    servers=(SERVER, dataclasses.replace(SERVER, instance=f"{RID}.0", pid=4000, state="warm",
                                         live=False, figures=None)),
    job=JobInfo(job="deploy", job_id="j1", ref="v2", who="alice", step="built",
                started=1.0, updated=2.0),
    crash_loop=None,
)
EVERY_RESULT: list[Result] = [
    STATUS,
    DeployResult(release=RID, sha="1a2b3c4d", ref="v1", switch_ms=812.4,
                 pruned=PruneResult(releases=("20261101T000000Z-0000000",), venvs=("ab12",))),
    RollbackResult(release=RID, sha="1a2b3c4d", switch_ms=3.5),
    RestartResult(release=RID, switch_ms=400.0),
    StartResult(release=RID, pid=4242),
    StopResult(stopped=True),
    PruneResult(releases=(), venvs=("ab12",)),
    Pong(pid=100, version="1.0"),
    Progress(step="fetched", message="v1 is 1a2b3c4"),
    PrepareResult(release=RID, sha="1a2b3c4d", ref="v1", prepared_until=1800000000.5),
    PrepareResult(release=RID, sha="1a2b3c4d", ref="v1", prepared_until=0.0, live=True),
    BuildResult(release=RID, sha="1a2b3c4d", ref="v1"),
    AbortResult(release=RID, candidate=f"{RID}.3"),
]


@pytest.mark.parametrize("result", EVERY_RESULT, ids=lambda r: type(r).__name__)
def test_every_result_survives_the_socket(result: Result) -> None:
    """to_json() through JSON and back with from_json() gives the same object."""
    sent = json.loads(json.dumps(result.to_json()))
    assert type(result).from_json(sent) == result
    assert type(result).from_json(sent).to_json() == sent


def test_status_json_keeps_its_keys() -> None:
    """`relman --json status` has the keys it had as a dict: figures sit beside a server's
    pid, and a server psutil could not read has none of them."""
    data = json.loads(json.dumps(STATUS.to_json()))
    assert sorted(data) == ["app", "crash_loop", "current", "daemon", "health", "job", "live",
                            "prepared", "prepared_until", "processes", "rollback_target",
                            "servers"]
    assert sorted(data["daemon"]) == ["cpu_percent", "pid", "rss", "uptime", "version",
                                      "workers"]
    assert data["health"] == {"status": 200, "detail": "HTTP/1.1 200 OK", "healthy": True}
    live, warm = data["servers"]
    assert sorted(live) == ["cpu_percent", "index", "instance", "live", "pid", "process",
                            "release", "restarts", "rss", "socket", "started", "state",
                            "uptime", "workers"]
    assert sorted(warm) == ["index", "instance", "live", "pid", "process", "release",
                            "restarts", "socket", "started", "state"]
    assert data["crash_loop"] is None
    assert data["job"]["job"] == "deploy"


def test_an_older_daemons_server_line_is_the_web_server() -> None:
    """A server line without process and index (an older daemon's answer) is the web
    server's, instance 1; a process unit's line has them and no socket."""
    data = json.loads(json.dumps(SERVER.to_json()))
    del data["process"], data["index"]
    line = ServerLine.from_json(data)
    assert (line.process, line.index) == ("web", 1)
    worker = dataclasses.replace(SERVER, instance=f"{RID}.worker.2.1", process="worker",
                                 index=2, socket="", live=False)
    assert ServerLine.from_json(json.loads(json.dumps(worker.to_json()))) == worker


def test_other_results_keep_their_keys() -> None:
    """The answers of deploy, rollback, restart, start, stop and prune, and progress lines,
    are the objects the daemon sent before they were typed."""
    deploy, rollback, restart, start, stop, prune, _pong, progress = EVERY_RESULT[1:9]
    assert deploy.to_json() == {"release": RID, "sha": "1a2b3c4d", "ref": "v1",
                                "switch_ms": 812.4,
                                "pruned": {"releases": ["20261101T000000Z-0000000"],
                                           "venvs": ["ab12"]}}
    assert sorted(rollback.to_json()) == ["release", "sha", "switch_ms"]
    assert sorted(restart.to_json()) == ["release", "switch_ms"]
    assert start.to_json() == {"release": RID, "pid": 4242, "started": []}
    assert stop.to_json() == {"stopped": True}
    assert prune.to_json() == {"releases": [], "venvs": ["ab12"]}
    assert json.dumps(progress.to_json()) == \
        '{"type": "progress", "step": "fetched", "message": "v1 is 1a2b3c4"}'


def test_job_info_is_the_journal_entry() -> None:
    """The job in status carries every field of the journal entry, under the same names."""
    entry = JournalEntry(job="deploy", ref="v1", who="alice", step=Step.BUILT)
    assert [f.name for f in dataclasses.fields(JobInfo)] == \
        [f.name for f in dataclasses.fields(JournalEntry)]
    assert JobInfo(**entry.to_json()).to_json() == entry.to_json()


def test_an_older_daemons_answer_still_parses() -> None:
    """Fields added later have defaults: a status without current, crash_loop or a server's
    figures, a deploy without switch_ms or pruned."""
    status = Status.from_json({"app": "shop", "live": None, "servers": [],
                               "daemon": {"pid": 1, "version": "0.9", "workers": 0, "rss": 0,
                                          "cpu_percent": 0.0, "uptime": 5}})
    assert (status.current, status.crash_loop, status.job, status.daemon.figures.uptime) == \
        (None, None, None, 5.0)
    deploy = DeployResult.from_json({"release": RID, "sha": "1a2b", "ref": "v1"})
    assert (deploy.switch_ms, deploy.pruned) == (0.0, PruneResult())


def test_unknown_keys_are_ignored() -> None:
    """A newer daemon's extra fields do not stop this CLI."""
    assert Pong.from_json({"pid": 1, "version": "2.0", "features": ["x"]}) == \
        Pong(pid=1, version="2.0")


def _status_with(**changes: object) -> dict[str, object]:
    data = json.loads(json.dumps(STATUS.to_json()))
    for path, value in changes.items():
        *parents, key = path.split("__")
        target = data
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        if value is KeyError:
            del target[key]
        else:
            target[key] = value
    return data


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        pytest.param({"app": KeyError}, "app: missing", id="missing-key"),
        pytest.param({"servers__0__pid": KeyError}, "servers[0].pid: missing",
                     id="missing-nested"),
        pytest.param({"servers__0__pid": "4242"}, "servers[0].pid: expected an integer, got a "
                     "string", id="string-for-int"),
        pytest.param({"servers__1__live": 1}, "servers[1].live: expected a boolean, got an "
                     "integer", id="int-for-bool"),
        pytest.param({"daemon__pid": True}, "daemon.pid: expected an integer, got a boolean",
                     id="bool-for-int"),
        pytest.param({"daemon__rss": KeyError}, "daemon.rss: missing", id="figures-incomplete"),
        pytest.param({"servers__0__rss": None}, "servers[0].rss: expected an integer, got null",
                     id="null-for-int"),
        pytest.param({"servers": {"0": {}}}, "servers: expected an array, got an object",
                     id="object-for-array"),
        pytest.param({"health": "ok"}, "health: expected an object, got a string",
                     id="string-for-object"),
        pytest.param({"health__status": 200.5}, "health.status: expected an integer, got a "
                     "number", id="float-for-int"),
        pytest.param({"job__started": "now"}, "job.started: expected a number, got a string",
                     id="string-for-float"),
        pytest.param({"live": 7}, "live: expected a string, got an integer",
                     id="int-for-optional-string"),
    ],
)
def test_a_malformed_answer_is_a_bad_answer(changes: dict[str, object], message: str) -> None:
    """A field missing or of the wrong type is BadAnswer naming it: exit 70 (a bug, or a
    daemon of another version), never a KeyError or TypeError in the CLI."""
    with pytest.raises(BadAnswer) as info:
        Status.from_json(_status_with(**changes))
    err = info.value
    assert err.message == f"unexpected answer from the daemon: {message}"
    assert isinstance(err, DaemonBug)
    assert (err.exit_code, err.code) == (70, "bad-answer")
    assert err.hint is not None
    assert "MainPID --value relman@" in err.hint  # not systemctl restart: it stops the app


@pytest.mark.parametrize("data", [None, [], "ok", 3], ids=repr)
def test_an_answer_that_is_not_an_object(data: object) -> None:
    """A result that is not a JSON object at all is a BadAnswer too."""
    with pytest.raises(BadAnswer, match="unexpected answer from the daemon: the answer: "
                                        "expected an object"):
        StopResult.from_json(data)


def test_a_float_field_takes_a_json_integer() -> None:
    """JSON does not tell 5 from 5.0: a number field accepts both, as a float."""
    assert RestartResult.from_json({"release": RID, "switch_ms": 5}).switch_ms == 5.0


def test_bad_answer_crosses_the_socket_as_itself() -> None:
    """Raised in the daemon, it reaches the CLI with its class and exit code."""
    err = error_from_dict(BadAnswer("job.step", "missing").to_dict())
    assert isinstance(err, BadAnswer)
    assert (err.exit_code, err.where, err.reason) == (70, "job.step", "missing")


def test_render_status_reads_the_typed_answer() -> None:
    """The human status shows the daemon, health, each server (with '?' for figures psutil
    could not read) and the job."""
    text = render_status(STATUS)
    assert "daemon:   pid 100, up 99s, rss 30 MiB" in text
    assert f"live:     {RID} (healthy: HTTP/1.1 200 OK)" in text
    assert f"server:   {RID}.1 live pid 4242 workers 2 rss 48 MiB up 12s" in text
    assert f"server:   {RID}.0 warm pid 4000 workers ? rss 0 MiB up 0s" in text
    assert "job:      deploy v2 by alice, at step built" in text


def test_the_cli_side_is_standard_library_only() -> None:
    """relman.client and relman.results import nothing outside the standard library: every
    CLI command, over SSH too, starts with them."""
    code = ("import sys; before = set(sys.modules); import relman.client, relman.results; "
            "print('\\n'.join({m.split('.')[0] for m in set(sys.modules) - before}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert "relman" in out
    assert sorted(set(out) - set(sys.stdlib_module_names) - {"relman"}) == []


def test_status_shows_a_prepared_candidate_and_its_time_left() -> None:
    """`relman status` names the release `deploy --prepare` left and the seconds until
    it is stopped; without one, no such line."""
    import time

    prepared = dataclasses.replace(STATUS, prepared=RID, prepared_until=time.time() + 600)
    line = render_status(prepared).splitlines()[-1]
    assert line.startswith(f"prepared: {RID} on next.sock, stopped in ")
    assert line.endswith("s unless switched")
    assert line.split("stopped in ")[1].split("s")[0].isdigit()
    assert "prepared:" not in render_status(STATUS)
    back = Status.from_json(json.loads(json.dumps(prepared.to_json())))
    assert (back.prepared, back.prepared_until) == (RID, prepared.prepared_until)

"""Process units beside the web server, pure parts: what an instance record of one must say,
how instances are named, and which process tags name an instance."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from relman.supervisor import ServerSpec, Supervisor, Tracker
from relman.supervisor.identity import (
    CorruptRecord,
    InstanceRecord,
    read_record,
    unit_of,
    write_record,
)

RELEASE = "20261123T031500Z-1a2b3c4"
OTHER = "20261124T031500Z-5e6f7a8"


def write(tmp_path: Path, name: str, data: dict[str, object]) -> Path:
    path = tmp_path / f"{name}.pid"
    path.write_text(json.dumps(data))
    return path


def test_a_process_record_round_trips(tmp_path):
    """A process unit's record keeps its process, index and stop signal."""
    record = InstanceRecord(instance=f"{RELEASE}.worker.2.3", release=RELEASE, cwd="/srv/x",
                            pid=42, create_time=2.5, uid=1000, process="worker", index=2,
                            stop_signal=signal.SIGINT.value)
    write_record(tmp_path / f"{record.instance}.pid", record)
    assert read_record(tmp_path / f"{record.instance}.pid") == record


def test_an_old_record_is_the_web_servers(tmp_path):
    """A record written before process units has no process, index or stop signal: it is
    the web server's, stopped by SIGTERM."""
    path = write(tmp_path, f"{RELEASE}.1", {"instance": f"{RELEASE}.1", "release": RELEASE,
                                             "pid": 42, "create_time": 1.0, "uid": 0})
    record = read_record(path)
    assert record is not None
    assert (record.process, record.index, record.stop_signal) == ("web", 1, signal.SIGTERM)
    assert record.is_web


@pytest.mark.parametrize(("instance", "fields"), [
    (f"{RELEASE}.worker.1.1", {}),  # a process's name, recorded as the web server
    (f"{RELEASE}.1", {"process": "worker"}),  # the web server's name, as a process
    (f"{RELEASE}.worker.2.1", {"process": "worker", "index": 1}),  # another index
    (f"{RELEASE}.beat.1.1", {"process": "worker"}),  # another process
    (f"{RELEASE}.worker.1.x", {"process": "worker"}),  # no generation
    (f"{RELEASE}.worker.1.0", {"process": "worker"}),
    (f"{RELEASE}.Worker.1.1", {"process": "Worker"}),  # not a process name
    (f"{RELEASE}.w.rk.1.1", {"process": "w.rk"}),
    (f"{RELEASE}.worker.0.1", {"process": "worker", "index": 0}),
    (f"{RELEASE}.worker.1.1", {"process": "worker", "index": True}),
    (f"{RELEASE}.worker.1.1", {"process": "worker", "index": "1"}),
    (f"{RELEASE}.worker.1.1", {"process": 7}),
    (f"{RELEASE}.2.1", {"index": 2}),  # the web server has one instance
    (f"{RELEASE}.worker.1.1", {"process": "worker", "stop_signal": 9}),  # KILL: no stop
    (f"{RELEASE}.worker.1.1", {"process": "worker", "stop_signal": "TERM"}),
    (f"{RELEASE}.worker.1.1", {"process": "worker", "stop_signal": 0}),
    (f"{RELEASE}.x.1", {"release": f"{RELEASE}.x"}),  # a release id has no dot
], ids=["process-name-as-web", "web-name-as-process", "other-index", "other-process",
        "no-generation", "generation-0", "upper-case", "dotted-name", "index-0", "bool-index",
        "str-index", "int-process", "web-index-2", "sigkill", "str-signal", "signal-0",
        "dotted-release"])
def test_records_that_misname_their_unit_are_corrupt(tmp_path, instance, fields):
    """A record whose instance name is not the one of its process and index, or whose
    process, index or stop signal cannot be, is never used."""
    data: dict[str, object] = {"instance": instance, "release": RELEASE, **fields}
    with pytest.raises(CorruptRecord):
        read_record(write(tmp_path, instance, data))


@pytest.mark.parametrize("sig", ["TERM", "INT", "QUIT", "HUP", "USR1", "USR2"])
def test_every_stop_signal_of_the_config_is_recorded(tmp_path, sig):
    """Each stop_signal [processes.NAME] accepts is one a record may hold."""
    data: dict[str, object] = {"instance": f"{RELEASE}.beat.1.1", "release": RELEASE,
                               "process": "beat",
                               "stop_signal": signal.Signals["SIG" + sig].value}
    record = read_record(write(tmp_path, f"{RELEASE}.beat.1.1", data))
    assert record is not None
    assert record.stop_signal == signal.Signals["SIG" + sig]


def supervisor(tmp_path: Path) -> Supervisor:
    run = tmp_path / "run"
    run.mkdir(exist_ok=True)
    return Supervisor(run, tmp_path / "log", Tracker("shop", tmp_path, None))


def test_web_generations_ignore_process_files(tmp_path):
    """The web server's generations are counted from its own files and links only: a
    process's pidfile (`R.worker.1.3.pid`) is no generation of it."""
    sup = supervisor(tmp_path)
    run = sup.run_dir
    for name in (f"{RELEASE}.worker.1.3.pid", f"{RELEASE}.worker.12.7.pid",
                 f"{RELEASE}.2.pid", f"{RELEASE}.4.sock", f"{OTHER}.9.pid"):
        (run / name).touch()
    assert sup.next_instance(RELEASE) == f"{RELEASE}.5"
    assert sup.next_instance(RELEASE) == f"{RELEASE}.6"  # even before its files exist
    os.symlink(f"{RELEASE}.8.sock", run / "app.sock")
    assert sup.next_instance(RELEASE) == f"{RELEASE}.9"
    assert sup.next_instance(OTHER) == f"{OTHER}.10"


def test_process_generations_are_per_process_and_index(tmp_path):
    """Each (release, process, index) counts its own generations from 1."""
    sup = supervisor(tmp_path)
    (sup.run_dir / f"{RELEASE}.worker.1.3.pid").touch()
    (sup.run_dir / f"{RELEASE}.7.pid").touch()
    assert sup.next_instance(RELEASE, "worker", 1) == f"{RELEASE}.worker.1.4"
    assert sup.next_instance(RELEASE, "worker", 2) == f"{RELEASE}.worker.2.1"
    assert sup.next_instance(RELEASE, "worker", 1) == f"{RELEASE}.worker.1.5"
    assert sup.next_instance(RELEASE, "worker-2", 1) == f"{RELEASE}.worker-2.1.1"
    assert sup.next_instance(OTHER, "worker", 1) == f"{OTHER}.worker.1.1"
    assert sup.next_instance(RELEASE) == f"{RELEASE}.8"


@pytest.mark.parametrize(("process", "index"), [("Worker", 1), ("a.b", 1), ("worker", 0)])
def test_no_instance_of_a_bad_unit_is_named(tmp_path, process, index):
    """A process name the config would refuse, or an index below 1, is a bug: ValueError."""
    with pytest.raises(ValueError, match="bad"):
        supervisor(tmp_path).next_instance(RELEASE, process, index)


def test_only_the_web_server_has_a_socket(tmp_path):
    """A spec of the web server needs a socket and a process's has none; the name must be
    the unit's."""
    common = {"release": RELEASE, "argv": ("true",), "cwd": tmp_path, "env": {},
              "pidfile": tmp_path / "x.pid", "log": tmp_path / "x.log"}
    web = ServerSpec(instance=f"{RELEASE}.1", socket=tmp_path / "s.sock", **common)
    assert web.listener == tmp_path / "s.sock"
    worker = ServerSpec(instance=f"{RELEASE}.worker.1.1", socket=None, process="worker",
                        **common)
    with pytest.raises(TypeError, match="no socket"):
        _ = worker.listener
    with pytest.raises(ValueError, match="socket"):
        ServerSpec(instance=f"{RELEASE}.1", socket=None, **common)
    with pytest.raises(ValueError, match="socket"):
        ServerSpec(instance=f"{RELEASE}.worker.1.1", socket=tmp_path / "s.sock",
                   process="worker", **common)
    with pytest.raises(ValueError, match="not an instance"):
        ServerSpec(instance=f"{RELEASE}.worker.2.1", socket=None, process="worker", index=1,
                   **common)


@pytest.mark.parametrize(("tags", "unit"), [
    ({"RELMAN_UNIT": f"{RELEASE}.worker.1.1", "RELMAN_INSTANCE": "1"},
     f"{RELEASE}.worker.1.1"),
    ({"RELMAN_INSTANCE": f"{RELEASE}.3"}, f"{RELEASE}.3"),  # an older daemon's server
    ({"RELMAN_INSTANCE": "2"}, ""),  # an index only: no instance named
    ({}, ""),
])
def test_the_unit_tag_names_the_instance(tags, unit):
    """RELMAN_UNIT names a process's instance; an older daemon's RELMAN_INSTANCE does when
    there is no RELMAN_UNIT and it is an instance name, never an index."""
    assert unit_of(tags) == unit

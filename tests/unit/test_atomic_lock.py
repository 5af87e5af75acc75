"""Atomic writes and symlink flips under concurrent readers, and flock-based locks."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import datetime, tzinfo
from pathlib import Path

import pytest

from relman import atomic
from relman.atomic import create_once, read_link, replace_symlink, set_aside, write_atomic
from relman.errors import StateWriteFailed
from relman.lock import Busy, FileLock, locked, read_holder
from testing.fullfs import fill, free, small_tmpfs


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    yield
    os.umask(old)


@pytest.mark.usefixtures("umask_022")
@pytest.mark.parametrize("mode", [0o600, 0o640, 0o644], ids=oct)
def test_write_atomic_writes_content_and_mode(tmp_path: Path, mode: int) -> None:
    """The file holds the data with the requested mode, and no temp file is left behind."""
    path = tmp_path / "state.json"
    write_atomic(path, b"old", mode=0o600)
    write_atomic(path, b'{"a": 1}\n', mode=mode)
    assert path.read_bytes() == b'{"a": 1}\n'
    assert path.stat().st_mode & 0o777 == mode
    assert os.listdir(tmp_path) == ["state.json"]


def test_write_atomic_default_mode_is_0640(tmp_path: Path) -> None:
    """Without a mode the file is not world-readable."""
    path = tmp_path / "f"
    write_atomic(path, b"x")
    assert path.stat().st_mode & 0o007 == 0


def test_write_atomic_failure_leaves_nothing(tmp_path: Path) -> None:
    """A write that cannot complete leaves neither the target nor a temp file."""
    path = tmp_path / "f"
    path.mkdir()  # os.replace cannot put a file over a directory
    with pytest.raises(IsADirectoryError):
        write_atomic(path, b"x")
    assert os.listdir(tmp_path) == ["f"]
    assert path.is_dir()


def hammer(check: Callable[[], None]) -> tuple[threading.Event, threading.Thread, list[str]]:
    """Run *check* in a tight loop in a thread until the event is set; collect what it raises."""
    stop = threading.Event()
    problems: list[str] = []
    ready = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                check()
            except Exception as e:  # noqa: BLE001 - any failure is what the test reports
                problems.append(repr(e))
            ready.set()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    ready.wait(5)
    return stop, thread, problems


def test_create_once_publishes_only_the_first(tmp_path: Path) -> None:
    """create_once() writes a missing file with its mode; a second call gets the first's
    content back and changes nothing; no temp file is left."""
    path = tmp_path / "settings.key"
    assert create_once(path, b"first", 0o600) == b"first"
    assert create_once(path, b"second", 0o600) == b"first"
    assert path.read_bytes() == b"first"
    assert path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["settings.key"]


def test_reader_never_sees_a_partial_file(tmp_path: Path) -> None:
    """While a writer replaces a file 200 times, a reader sees only whole old or new contents."""
    path = tmp_path / "big"
    contents = [bytes([65 + i]) * 256 * 1024 for i in range(2)]
    write_atomic(path, contents[0])
    reads = [0]

    def check() -> None:
        data = path.read_bytes()
        reads[0] += 1
        if data not in contents:
            raise AssertionError(f"partial read: {len(data)} bytes, {set(data)!r}")

    stop, thread, problems = hammer(check)
    for i in range(200):
        write_atomic(path, contents[i % 2])
    stop.set()
    thread.join(5)
    assert problems == [], problems[:3]
    assert reads[0] > 1


def test_reader_never_sees_the_link_missing(tmp_path: Path) -> None:
    """While `current` flips between two targets 500 times, readlink always finds it."""
    (tmp_path / "releases" / "a").mkdir(parents=True)
    (tmp_path / "releases" / "b").mkdir()
    link = tmp_path / "current"
    targets = ["releases/a", "releases/b"]
    replace_symlink(link, targets[0])
    seen: set[str] = set()

    def check() -> None:
        target = os.readlink(link)
        if target not in targets:
            raise AssertionError(f"unexpected target {target!r}")
        seen.add(target)

    stop, thread, problems = hammer(check)
    for i in range(500):
        replace_symlink(link, targets[(i + 1) % 2])
    stop.set()
    thread.join(5)
    assert problems == [], problems[:3]
    assert seen
    assert os.readlink(link) == targets[0]
    assert sorted(os.listdir(tmp_path)) == ["current", "releases"]


def test_replace_symlink_creates_and_replaces(tmp_path: Path) -> None:
    """replace_symlink makes a missing link and repoints an existing one."""
    link = tmp_path / "current"
    assert read_link(link) is None
    replace_symlink(link, tmp_path / "one")
    assert read_link(link) == str(tmp_path / "one")
    replace_symlink(link, "two")
    assert read_link(link) == "two"


def test_replace_symlink_sets_aside_a_directory_in_its_place(tmp_path: Path) -> None:
    """A directory where the link belongs (another tool's) is set aside, not a wedge."""
    link = tmp_path / "current"
    link.mkdir()
    (link / "kept").write_text("x")
    replace_symlink(link, "releases/b")
    assert os.readlink(link) == "releases/b"
    (aside,) = tmp_path.glob("current.corrupt-*")
    assert (aside / "kept").read_text() == "x"


@pytest.mark.parametrize("kind", ["file", "directory"])
def test_set_aside_renames_beside_with_a_utc_stamp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """set_aside() renames NAME to NAME.corrupt-<UTC stamp> in the same directory, keeps
    what it held, logs a warning, and never replaces an earlier one of the same second."""
    from structlog.testing import capture_logs

    class Frozen(datetime):
        @classmethod
        def now(cls, tz: tzinfo | None = None) -> Frozen:
            return cls(2026, 11, 29, 14, 15, 0, tzinfo=tz)

    monkeypatch.setattr(atomic, "datetime", Frozen)
    path = tmp_path / "20261123T031500Z-1a2b3c4.json"
    moved = []
    for n in range(2):
        if kind == "file":
            path.write_text(f'{{"id": {n}')
        else:
            path.mkdir()
        with capture_logs() as logs:
            moved.append(set_aside(path, reason="truncated"))
        assert logs == [{"event": "state.set_aside", "path": str(path), "to": moved[-1].name,
                         "reason": "truncated", "log_level": "warning"}]
    assert not path.exists()
    assert [p.name for p in moved] == [
        "20261123T031500Z-1a2b3c4.json.corrupt-20261129T141500Z",
        "20261123T031500Z-1a2b3c4.json.corrupt-20261129T141500Z.1"]
    assert sorted(tmp_path.iterdir()) == moved
    if kind == "file":
        assert [p.read_text() for p in moved] == ['{"id": 0', '{"id": 1']


def test_second_lock_is_busy_and_names_the_holder(tmp_path: Path) -> None:
    """A second FileLock on a held path raises Busy carrying the first holder's description."""
    path = tmp_path / "deploy.lock"
    first = FileLock(path)
    first.acquire({"who": "alice", "job": "deploy", "pid": os.getpid()})
    assert first.held
    with pytest.raises(Busy) as info:
        FileLock(path).acquire({"who": "bob"})
    assert info.value.holder == {"who": "alice", "job": "deploy", "pid": os.getpid()}
    assert info.value.path == path
    assert str(path) in str(info.value)

    first.release()
    assert not first.held
    second = FileLock(path)
    second.acquire({"who": "bob"})
    assert read_holder(path) == {"who": "bob"}
    second.release()
    assert read_holder(path) == {}


def test_locked_releases_on_exit(tmp_path: Path) -> None:
    """locked() holds the lock inside the block and frees it after, even on error."""
    path = tmp_path / "deploy.lock"

    def fail_while_locked() -> None:
        with locked(path, {"who": "alice"}):
            with pytest.raises(Busy):
                FileLock(path).acquire()
            raise KeyError("boom")

    with pytest.raises(KeyError):
        fail_while_locked()
    with locked(path) as lock:
        assert lock.held


HOLD_LOCK = """
import os, sys, time
from pathlib import Path
from relman.lock import FileLock
FileLock(Path(sys.argv[1])).acquire({"who": "child", "pid": os.getpid()})
print("locked", flush=True)
time.sleep(60)
"""


def test_lock_of_sigkilled_holder_is_free(tmp_path: Path) -> None:
    """A lock held by a process that is SIGKILLed is free again: it cannot go stale."""
    path = tmp_path / "deploy.lock"
    child = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(path)],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == "locked\n"
        with pytest.raises(Busy) as info:
            FileLock(path).acquire()
        assert info.value.holder == {"who": "child", "pid": child.pid}
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
        if child.stdout is not None:
            child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    lock = FileLock(path)
    lock.acquire({"who": "parent"})  # the holder's record is stale; the flock is not
    assert lock.held
    lock.release()


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_lock_whose_record_the_full_disk_refuses_is_not_held(tmp_path: Path) -> None:
    """On a full file system, acquire() raises StateWriteFailed naming the lock file, with no
    descriptor left open and no lock held; without a holder record it is taken all the same,
    and once space is back the lock is taken with its record as usual."""
    with small_tmpfs(tmp_path / "state", "1m") as state:
        path = state / "deploy.lock"
        path.touch()
        filler = fill(state)
        before = open_fds()
        with pytest.raises(StateWriteFailed) as info:
            FileLock(path).acquire({"who": "alice", "job": "deploy v2"})
        assert info.value.message == f"no space left on device ({path})"
        assert info.value.exit_code == 1
        assert open_fds() == before
        other = os.open(path, os.O_RDWR)
        try:
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError if leaked
        finally:
            os.close(other)
        bare = FileLock(path)  # no holder record: nothing to write, so a full disk is fine
        bare.acquire()
        assert read_holder(path) == {}
        bare.release()
        free(filler)
        lock = FileLock(path)
        lock.acquire({"who": "bob"})
        assert read_holder(path) == {"who": "bob"}
        lock.release()


def test_write_atomic_on_a_full_disk_keeps_the_old_file(tmp_path: Path) -> None:
    """A write the full file system refuses raises StateWriteFailed naming the file; the old
    content stays and no temp file is left behind."""
    with small_tmpfs(tmp_path / "state", "1m") as state:
        path = state / "journal.json"
        write_atomic(path, b"old")
        filler = fill(state)
        with pytest.raises(StateWriteFailed, match="no space left on device"):
            write_atomic(path, b"new" * 4096)
        assert path.read_bytes() == b"old"
        assert sorted(os.listdir(state)) == [filler.name, "journal.json"]

"""The control socket end to end in one process: a real ControlServer and the CLI's request()."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import stat
import tempfile
import threading
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from relman.client import request
from relman.control import ControlServer, Send, peer_allowed, scale_counts
from relman.errors import (
    BadAnswer,
    DaemonBug,
    DaemonUnreachable,
    LockHeld,
    UnknownRelease,
    UsageError,
)
from relman.results import Progress, Result, StartResult
from testing.needs import need_root

T = TypeVar("T")
NOBODY = 65534


class LoopThread:
    """An asyncio loop running in a background thread, as the daemon's loop would."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(5)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


class Echo(Result):
    """An answer of any JSON shape, as a handler returns it."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data

    def to_json(self) -> dict[str, object]:
        return self.data


class Daemon:
    """A ControlServer whose handler sends two progress events, then answers or raises."""

    def __init__(self, path: Path, crash_log: Path | None = None) -> None:
        self.path = path
        self.requests: list[dict[str, Any]] = []
        self.server = ControlServer(path, self.handle, crash_log)

    async def handle(self, req: dict[str, Any], send: Send, peer: tuple[int, int]) -> Result:
        self.requests.append(req)
        if req.get("command") == "busy":
            raise LockHeld("x", hint="pass --wait to queue behind it")
        if req.get("command") == "crash":
            raise KeyError("a bug")
        if req.get("command") == "unknown":
            raise UnknownRelease("release 'r9': no such release", tail="last\nlines")
        if req.get("command") == "quiet":  # a long step that prints nothing: keepalives only
            for _ in range(30):
                await asyncio.sleep(0.1)
                send({"type": "keepalive"})
        send({"type": "progress", "step": "fetched", "message": "one"})
        await asyncio.sleep(0)
        send({"type": "progress", "step": "built", "message": "two"})
        return Echo({"command": req.get("command"), "args": req.get("args"),
                     "client": req.get("client"), "peer": list(peer)})


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path: unix socket paths are limited to 107 bytes."""
    path = Path(tempfile.mkdtemp(prefix="relman-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def daemon(short_dir: Path) -> Iterator[Daemon]:
    loop = LoopThread()
    served = Daemon(short_dir / "relman.ctl")
    loop.run(served.server.start())
    yield served
    loop.run(served.server.close())
    loop.stop()


def test_request_streams_progress_then_returns_result(daemon: Daemon) -> None:
    """The progress callback sees every event in order, then request() returns the result."""
    events: list[Progress] = []
    result = request(daemon.path, "deploy", {"ref": "v1"}, {"user": "alice"}, events.append)
    assert events == [Progress(step="fetched", message="one"),
                      Progress(step="built", message="two")]
    assert result == {"command": "deploy", "args": {"ref": "v1"}, "client": {"user": "alice"},
                      "peer": [os.getuid(), os.getgid()]}


def test_request_without_progress_callback(daemon: Daemon) -> None:
    """Progress events are skipped when nobody listens for them."""
    assert request(daemon.path, "status", {}, {})["command"] == "status"


def test_lock_held_reaches_the_client_with_exit_code_4(daemon: Daemon) -> None:
    """A LockHeld raised in the daemon is raised by request() with its exit code and hint."""
    with pytest.raises(LockHeld) as info:
        request(daemon.path, "busy", {}, {})
    assert info.value.exit_code == 4
    assert info.value.message == "x"
    assert info.value.hint == "pass --wait to queue behind it"


def test_usage_error_keeps_class_and_tail(daemon: Daemon) -> None:
    """Other RelmanErrors cross the socket with their class, exit code and tail."""
    with pytest.raises(UnknownRelease) as info:
        request(daemon.path, "unknown", {}, {})
    assert (info.value.exit_code, info.value.tail) == (2, "last\nlines")


def test_daemon_bug_reaches_the_client_with_exit_code_70(daemon: Daemon) -> None:
    """An exception that is not a RelmanError is a bug: exit 70, not 'daemon unreachable'."""
    with pytest.raises(DaemonBug) as info:
        request(daemon.path, "crash", {}, {})
    assert info.value.exit_code == 70
    assert "KeyError" in info.value.message


@pytest.mark.parametrize("log_dir", ["log", "absent"])
def test_daemon_bug_names_the_crash_log_once_written(short_dir: Path, log_dir: str) -> None:
    """A bug's traceback is appended to the daemon's crash log, which the message names; a
    crash log that cannot be written (its directory gone) is not named."""
    (short_dir / "log").mkdir()
    crash_log = short_dir / log_dir / "relman-crash.log"
    loop = LoopThread()
    served = Daemon(short_dir / "relman.ctl", crash_log)
    loop.run(served.server.start())
    try:
        for _ in range(2):
            with pytest.raises(DaemonBug) as info:
                request(served.path, "crash", {}, {})
    finally:
        loop.run(served.server.close())
        loop.stop()
    message = info.value.message
    if log_dir == "absent":
        assert message == ("internal error in the daemon (KeyError): see its log "
                           "(journalctl -u relman@APP)")
        assert not crash_log.parent.exists()
        return
    assert message == (f"internal error in the daemon (KeyError): see {crash_log} and its "
                       "log (journalctl -u relman@APP)")
    text = crash_log.read_text()
    assert text.count("control request 'crash'") == 2
    assert text.count("KeyError: 'a bug'") == 2
    assert "Traceback (most recent call last)" in text


@pytest.mark.parametrize("counts", [[], "worker=1", {"worker": -1}, {"worker": 1.5},
                                    {"worker": float("nan")}, {"worker": "3"},
                                    {"worker": True}, {"worker": 10_000}, {"worker": None}])
def test_scale_counts_from_any_client_are_checked(counts: object) -> None:
    """A scale request's counts are whole numbers 0..9999 whoever sends them: anything else
    is a usage error, not an internal one (int() of NaN or of a list would raise)."""
    with pytest.raises(UsageError):
        scale_counts(counts)


def test_scale_counts_that_are_fine() -> None:
    assert scale_counts({"worker": 0, "beat": 9999}) == {"worker": 0, "beat": 9999}
    assert scale_counts(None) == {}


def test_silent_client_is_dropped(daemon: Daemon) -> None:
    """A client that never sends its request line does not hold a connection forever."""
    daemon.server.request_timeout = 0.2
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(daemon.path))
        answer = json.loads(sock.makefile("rb").readline())
    assert answer["type"] == "error"
    assert answer["error"]["exit_code"] == 2


def test_socket_is_private_to_its_owner(daemon: Daemon) -> None:
    """The control socket is created mode 0600: no window in which others may connect."""
    mode = daemon.path.stat().st_mode
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o600


def test_close_removes_the_socket(short_dir: Path) -> None:
    """Closing the server removes its socket file; starting again replaces a stale one."""
    path = short_dir / "relman.ctl"
    path.write_text("stale")
    loop = LoopThread()
    try:
        served = Daemon(path)
        loop.run(served.server.start())
        assert stat.S_ISSOCK(path.stat().st_mode)
        loop.run(served.server.close())
    finally:
        loop.stop()
    assert not path.exists()


@pytest.mark.parametrize("stale", [False, True], ids=["no-socket", "stale-socket"])
def test_no_daemon_is_unreachable_with_a_hint(short_dir: Path, stale: bool) -> None:
    """Without a daemon, request() raises DaemonUnreachable (exit 3) saying how to start one."""
    path = short_dir / "relman.ctl"
    if stale:  # a socket file left by a SIGKILLed daemon: nobody listens on it
        dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        dead.bind(str(path))
        dead.close()
    with pytest.raises(DaemonUnreachable) as info:
        request(path, "status", {}, {})
    err = info.value
    assert err.exit_code == 3
    assert str(path) in err.message
    assert err.hint is not None
    assert "systemctl start relman@" in err.hint
    assert "relman daemon" in err.hint


def test_bad_request_line_is_a_usage_error(daemon: Daemon) -> None:
    """A line that is not JSON gets a usage error (exit 2) and never reaches the handler."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(daemon.path))
        sock.sendall(b"{not json\n")
        answer = json.loads(sock.makefile("rb").readline())
    assert answer["type"] == "error"
    assert answer["error"]["exit_code"] == 2
    assert "bad control request" in answer["error"]["message"]
    assert daemon.requests == []


def send_line(path: Path, line: bytes) -> dict[str, Any]:
    """Send one raw request line and return the first answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(path))
        sock.sendall(line + b"\n")
        return json.loads(sock.makefile("rb").readline())


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        pytest.param(b'{"command": "status", "args": [1]}', "'args' must be an object, not an "
                     "array", id="args-array"),
        pytest.param(b'{"command": "deploy", "args": "v1"}', "'args' must be an object",
                     id="args-string"),
        pytest.param(b'{"command": "status", "args": null}', "not null", id="args-null"),
        pytest.param(b'{"command": "status", "client": "x"}', "'client' must be an object, not "
                     "a string", id="client-string"),
        pytest.param(b'{"command": ["status"]}', "'command' must be a string", id="command-array"),
        pytest.param(b"[1, 2]", "expected an object, got an array", id="not-an-object"),
        pytest.param(b"[" * 200_000 + b"]" * 200_000, "nested too deeply", id="nested-200000"),
        pytest.param(b'{"a":' * 100_000 + b"1" + b"}" * 100_000, "nested too deeply",
                     id="objects-nested-100000"),
    ],
)
def test_malformed_request_is_a_usage_error(daemon: Daemon, line: bytes, reason: str) -> None:
    """A request of the wrong shape gets a usage error (exit 2) naming what is wrong, never
    reaches the handler, and the server goes on answering."""
    answer = send_line(daemon.path, line)
    assert answer["type"] == "error"
    assert answer["error"]["exit_code"] == 2
    assert answer["error"]["message"].startswith("bad control request: ")
    assert reason in answer["error"]["message"]
    assert daemon.requests == []
    assert request(daemon.path, "status", {}, {})["command"] == "status"


@pytest.mark.parametrize(
    ("uid", "own_uid", "allowed"),
    [
        pytest.param(1000, 1000, True, id="same-user"),
        pytest.param(0, 1000, True, id="root"),
        pytest.param(0, 0, True, id="root-daemon-root-peer"),
        pytest.param(1001, 1000, False, id="other-user"),
        pytest.param(1000, 0, False, id="user-driving-root-daemon"),
        pytest.param(NOBODY, 1000, False, id="nobody"),
    ],
)
def test_peer_allowed(uid: int, own_uid: int, allowed: bool) -> None:
    """Only the daemon's own user or root may drive the daemon."""
    assert peer_allowed(uid, own_uid) is allowed


def as_nobody(work: Callable[[], str]) -> str:
    """Run *work* in a forked child as uid 65534; what it returned (or the error it raised)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        answer = "no answer"
        try:
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            answer = work()
        except Exception as e:  # noqa: BLE001 - reported to the parent, which asserts on it
            answer = type(e).__name__
        finally:
            os.write(write_end, answer.encode())
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as f:
        got = f.read().decode()
    os.waitpid(pid, 0)
    return got


def read_answer(path: Path) -> str:
    """Connect to *path*, ask for the status and read the daemon's first line."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(path))
        sock.sendall(b'{"command": "status"}\n')
        return sock.makefile("rb").readline().decode()




@pytest.fixture
def open_to_all(daemon: Daemon) -> Daemon:
    """The daemon's socket loosened to 0666, as a careless operator might."""
    daemon.path.parent.chmod(0o755)
    daemon.path.chmod(0o666)
    return daemon


def test_other_user_cannot_connect(daemon: Daemon) -> None:
    """Another user cannot even connect: the socket's mode keeps them out."""
    need_root("switching to another uid")
    daemon.path.parent.chmod(0o755)
    assert as_nobody(lambda: read_answer(daemon.path)) == "PermissionError"
    assert daemon.requests == []


def test_other_user_is_refused_by_peer_check(open_to_all: Daemon) -> None:
    """Past a loosened socket mode, the peer-credential check still refuses another user."""
    need_root("switching to another uid")
    answer = json.loads(as_nobody(lambda: read_answer(open_to_all.path)))
    assert answer["type"] == "error"
    assert answer["error"]["exit_code"] == 2
    assert f"uid {NOBODY} may not control this daemon" in answer["error"]["message"]
    assert open_to_all.requests == []


def test_daemon_that_hangs_up_is_unreachable_not_a_traceback(short_dir: Path) -> None:
    """A peer that accepts and closes at once (a daemon dying mid-request): the client
    raises DaemonUnreachable, never a raw BrokenPipeError, however large the request."""
    path = short_dir / "hangup.ctl"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(path))
        listener.listen(1)

        def hang_up() -> None:
            conn, _ = listener.accept()
            conn.close()

        thread = threading.Thread(target=hang_up)
        thread.start()
        with pytest.raises(DaemonUnreachable):
            request(path, "deploy", {"ref": "x" * 1_000_000}, {})
        thread.join(10)


def test_a_daemon_that_never_answers_is_given_up_after_a_silence(
        short_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A daemon whose loop is stuck (the kernel queues the connection, nobody accepts it):
    request() gives up after RELMAN_DAEMON_TIMEOUT seconds of silence with DaemonUnreachable
    (exit 3) and a hint, instead of hanging."""
    monkeypatch.setenv("RELMAN_DAEMON_TIMEOUT", "0.5")
    path = short_dir / "stuck.ctl"
    errors: list[BaseException] = []

    def ask() -> None:
        try:
            request(path, "status", {}, {})
        except BaseException as e:  # noqa: BLE001 - looked at below
            errors.append(e)

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(path))
        listener.listen(8)
        thread = threading.Thread(target=ask, daemon=True)
        thread.start()
        thread.join(60)  # a bound for the old client, which waited forever
        assert not thread.is_alive(), "the client hangs on a daemon that does not answer"
    (err,) = errors
    assert isinstance(err, DaemonUnreachable)
    assert err.exit_code == 3
    assert err.message == f"the daemon does not answer ({path}): nothing from it in 0.5 s"
    assert err.hint is not None
    assert "journalctl -u relman@" in err.hint
    assert "kill -9" in err.hint


def test_keepalives_keep_a_quiet_job_going(daemon: Daemon,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The silence limit is per silence: a job that sends keepalives for longer than the
    limit is not cut off, and the keepalives are not shown as progress."""
    monkeypatch.setenv("RELMAN_DAEMON_TIMEOUT", "2")
    events: list[Progress] = []
    result = request(daemon.path, "quiet", {}, {}, events.append)
    assert result["command"] == "quiet"
    assert [e.step for e in events] == ["fetched", "built"]


@pytest.mark.parametrize("value", ["soon", "0", "-1", "inf", "nan"])
def test_a_bad_daemon_timeout_is_a_usage_error(daemon: Daemon, value: str,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """RELMAN_DAEMON_TIMEOUT must be a positive number of seconds (exit 2 otherwise)."""
    monkeypatch.setenv("RELMAN_DAEMON_TIMEOUT", value)
    with pytest.raises(UsageError, match="RELMAN_DAEMON_TIMEOUT"):
        request(daemon.path, "status", {}, {})


def test_request_reads_the_answer_into_its_result_class(daemon: Daemon) -> None:
    """With into=, request() returns that Result, its fields checked."""
    result = request(daemon.path, "status", {}, {}, into=Peer)
    assert result == Peer(command="status", peer=(os.getuid(), os.getgid()))


class Peer(Result):
    """The part of the test daemon's answer a typed reader picks."""

    __slots__ = ("command", "peer")

    def __init__(self, *, command: str, peer: tuple[int, ...]) -> None:
        self.command, self.peer = command, peer

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Peer) and (other.command, other.peer) == (self.command,
                                                                           self.peer)

    @classmethod
    def from_json(cls, data: object) -> Peer:
        assert isinstance(data, dict)
        return cls(command=data["command"], peer=tuple(data["peer"]))


def answer_with(path: Path, *lines: bytes) -> threading.Thread:
    """A fake daemon on *path* that reads one request and answers *lines*."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)

    def serve() -> None:
        with listener, listener.accept()[0] as conn:
            conn.makefile("rb").readline()
            conn.sendall(b"".join(line + b"\n" for line in lines))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        pytest.param([b"<html>"], "a message: not JSON: '<html>'", id="not-json"),
        pytest.param([b"[1, 2]"], "a message: expected an object, got an array", id="array"),
        pytest.param([b'{"type": "error", "error": "boom"}'],
                     "error: expected an object, got a string", id="error-not-an-object"),
        pytest.param([b'{"type": "progress", "step": 3, "message": "x"}'],
                     "step: expected a string, got an integer", id="bad-progress"),
        pytest.param([b'{"type": "result", "data": {"pid": 7}}'], "release: missing",
                     id="result-missing-field"),
        pytest.param([b'{"type": "result", "data": null}'],
                     "the answer: expected an object, got null", id="result-null"),
    ],
)
def test_a_daemon_answering_garbage_is_a_bad_answer(short_dir: Path, lines: list[bytes],
                                                    message: str) -> None:
    """Whatever a daemon sends that this CLI cannot read is BadAnswer (exit 70) naming what is
    wrong, not a KeyError, an AttributeError or a JSON traceback."""
    path = short_dir / "garbage.ctl"
    thread = answer_with(path, *lines)
    with pytest.raises(BadAnswer) as info:
        request(path, "start", {}, {}, lambda _event: None, into=StartResult)
    thread.join(10)
    assert info.value.exit_code == 70
    assert info.value.message == f"unexpected answer from the daemon: {message}"

"""Accept-queue depth and drain waiting, on real unix sockets."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from relman.supervisor import drain
from relman.supervisor.drain import DrainResult, accept_queue_depth, wait_drained
from testing.needs import need


@pytest.fixture
def sock_path() -> Iterator[Path]:
    # pytest's tmp_path can exceed the 108-byte sun_path limit
    d = tempfile.mkdtemp(dir="/tmp")
    try:
        yield Path(d) / "app.sock"
    finally:
        shutil.rmtree(d, ignore_errors=True)


@contextlib.contextmanager
def listener(path: Path, pending: int) -> Iterator[tuple[socket.socket, list[socket.socket]]]:
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(path))
    srv.listen(64)
    clients = []
    try:
        for _ in range(pending):
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            clients.append(c)
            c.connect(str(path))
        yield srv, clients
    finally:
        for c in clients:
            c.close()
        srv.close()


def accept_all(srv: socket.socket, n: int) -> list[socket.socket]:
    return [srv.accept()[0] for _ in range(n)]


def test_depth_counts_pending_connections(sock_path: Path) -> None:
    """The depth is the number of connections not yet accepted."""
    with listener(sock_path, 5):
        assert accept_queue_depth(sock_path) == 5
        assert accept_queue_depth(str(sock_path)) == 5


def test_depth_is_zero_after_accept(sock_path: Path) -> None:
    """The depth drops to 0 once the server accepts every connection."""
    with listener(sock_path, 5) as (srv, _):
        accepted = accept_all(srv, 5)
        try:
            assert accept_queue_depth(sock_path) == 0
        finally:
            for a in accepted:
                a.close()


def test_depth_is_none_without_listener(sock_path: Path) -> None:
    """A path nobody listens on has no depth."""
    assert accept_queue_depth(sock_path) is None


def test_depth_is_none_for_closed_listener(sock_path: Path) -> None:
    """A listener closed with its socket file left behind has no depth."""
    with listener(sock_path, 2):
        pass
    assert sock_path.exists()
    assert accept_queue_depth(sock_path) is None


def test_depth_ignores_a_symlink_to_the_socket(sock_path: Path) -> None:
    """Only the bound name matches, not a symlink pointing at it."""
    link = sock_path.with_name("live.sock")
    link.symlink_to(sock_path)
    with listener(sock_path, 1):
        assert accept_queue_depth(link) is None


def test_ss_fallback_gives_the_same_figure(
    sock_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The `ss -xlnH` fallback reports the same depth as sock_diag."""
    need(shutil.which("ss") is not None, "ss (iproute2) is not installed", "install iproute2")
    with listener(sock_path, 3):
        direct = accept_queue_depth(sock_path)
        monkeypatch.setattr(drain, "CAN_USE_SOCK_DIAG", False)
        assert accept_queue_depth(sock_path) == direct == 3
        monkeypatch.setattr(drain, "CAN_USE_SOCK_DIAG", None)
        assert accept_queue_depth(sock_path) == 3


def test_ss_fallback_refuses_figures_read_from_proc(
    sock_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An ss that reads /proc/net/unix (no queue figures) raises rather than reporting 0."""
    need(shutil.which("ss") is not None, "ss (iproute2) is not installed", "install iproute2")
    monkeypatch.setattr(drain, "CAN_USE_SOCK_DIAG", False)
    monkeypatch.setenv("PROC_NET_UNIX", "/proc/net/unix")  # makes ss skip sock_diag
    with listener(sock_path, 3), pytest.raises(RuntimeError, match="sock_diag"):
        accept_queue_depth(sock_path)


def test_neither_sock_diag_nor_ss_raises(sock_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without sock_diag and without ss the depth cannot be read."""
    monkeypatch.setattr(drain, "CAN_USE_SOCK_DIAG", False)
    monkeypatch.setenv("PATH", str(sock_path.parent))
    with pytest.raises(RuntimeError, match="ss -xlnH"):
        accept_queue_depth(sock_path)


def test_wait_drained_when_the_server_accepts(
    sock_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The wait ends drained once a server thread accepts the queued connections, and not
    before: the thread accepts only after a poll has seen all five queued."""
    seen_full = threading.Event()

    def depth(path: Path | str) -> int | None:
        found = accept_queue_depth(path)
        if found == 5:
            seen_full.set()
        return found

    monkeypatch.setattr(drain, "accept_queue_depth", depth)
    with listener(sock_path, 5) as (srv, _):
        accepted: list[socket.socket] = []

        def serve() -> None:
            if seen_full.wait(10):
                accepted.extend(accept_all(srv, 5))

        t = threading.Thread(target=serve)
        t.start()
        try:
            result = asyncio.run(wait_drained(sock_path, timeout=30.0, interval=0.02))
        finally:
            seen_full.set()
            t.join()
            for a in accepted:
                a.close()
    assert result.drained
    assert result.max_depth == 5
    assert result.polls >= 3  # full, then empty twice in a row
    assert len(accepted) == 5


def test_wait_drained_times_out_when_nothing_accepts(sock_path: Path) -> None:
    """The wait gives up at the timeout while connections stay queued."""
    with listener(sock_path, 4):
        result = asyncio.run(wait_drained(sock_path, timeout=0.2, interval=0.05))
    assert not result.drained
    assert result.max_depth == 4
    assert result.waited >= 0.2


def test_wait_drained_when_the_listener_is_gone(sock_path: Path) -> None:
    """A vanished listener counts as drained after two polls."""
    result = asyncio.run(wait_drained(sock_path, timeout=30.0, interval=0.01))
    assert result == DrainResult(drained=True, waited=result.waited, max_depth=0, polls=2)

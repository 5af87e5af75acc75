"""testing.load.Load(observe=...): each answer is seen with its times, headers and body
(bench/fleet.py reads from them which host and version answered), a real server on
loopback."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.client import HTTPResponse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from testing.load import Load
from testing.waiting import wait_until


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        status = 503 if self.path == "/sick" else 200
        body = f"sample v7 path {self.path}\n".encode()
        self.send_response(status)
        self.send_header("X-Upstream", "unix:/h1/run/app.sock")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_observe_sees_every_answer_with_its_times_header_and_body(url: str) -> None:
    """Every answer, a failed one too, reaches observe once, started before it ended."""
    seen: list[tuple[float, float, int, str, bytes]] = []
    lock = threading.Lock()

    def observe(started: float, ended: float, response: HTTPResponse, body: bytes) -> None:
        with lock:
            seen.append((started, ended, response.status,
                         response.headers["X-Upstream"], body))

    with Load(url, ("/", "/sick"), concurrency=2, max_requests=10, keepalive=True,
              observe=observe) as load:
        wait_until(lambda: load.result.sent >= 10, timeout=30, what="10 requests")
    result = load.result
    assert result.sent == len(seen) >= 10
    assert {status for _, _, status, _, _ in seen} == {200, 503}
    assert result.failed == sum(status != 200 for _, _, status, _, _ in seen)
    assert all(started <= ended for started, ended, _, _, _ in seen)
    assert {upstream for _, _, _, upstream, _ in seen} == {"unix:/h1/run/app.sock"}
    assert b"sample v7 path /" in {body[:16] for *_, body in seen}

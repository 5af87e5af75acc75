"""GET over a unix socket (run/app.sock, run/<id>.sock) for tests, benches and the demo."""

from __future__ import annotations

import socket
from pathlib import Path


def http_get(sock: Path, path: str = "/", *, timeout: float = 10) -> tuple[int, str]:
    """GET *path* with HTTP/1.0 over the unix socket *sock*: (status, body). OSError when
    nothing listens; ValueError when the answer is not HTTP."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(timeout)
        s.connect(str(sock))
        s.sendall(f"GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.decode(errors="replace").partition("\r\n\r\n")
    words = head.split()
    if len(words) < 2 or not words[1].isdigit():
        raise ValueError(f"not an HTTP answer: {head[:80]!r}")
    return int(words[1]), body

"""Health probes: HTTP or the uwsgi protocol over a unix socket, and HTTP through nginx."""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

from relman.errors import Unhealthy
from relman.supervisor.server import ServerHandle


@dataclass(frozen=True, slots=True)
class Probe:
    status: int | None  # None: no HTTP answer
    detail: str  # why there was no answer, or the status line


def _quote(path: str) -> str:
    """*path* as the ASCII a request line needs (a configured "/santé" becomes percent-encoded)."""
    return quote(path, safe="/?&=%:@!$'()*+,;~-._")


def _http_request(path: str, host: str, headers: Mapping[str, str]) -> bytes:
    lines = [f"GET {_quote(path)} HTTP/1.0", f"Host: {host}", "User-Agent: relman-health",
             *(f"{k}: {v}" for k, v in headers.items()), "", ""]
    return "\r\n".join(lines).encode("latin-1")


def uwsgi_packet(path: str, host: str) -> bytes:
    """A uwsgi-protocol request (modifier1 0: WSGI), as nginx's uwsgi_pass sends it."""
    path_only, _, query = path.partition("?")
    # As nginx's uwsgi_params: REQUEST_URI as sent on the wire, PATH_INFO decoded.
    env = {"REQUEST_METHOD": "GET", "REQUEST_URI": _quote(path), "PATH_INFO": path_only,
           "QUERY_STRING": query, "SERVER_PROTOCOL": "HTTP/1.0", "HTTP_HOST": host,
           "SERVER_NAME": host, "SERVER_PORT": "80", "REMOTE_ADDR": "127.0.0.1",
           "HTTP_USER_AGENT": "relman-health"}
    pairs = [(k.encode(), v.encode()) for k, v in env.items()]
    body = b"".join(struct.pack("<H", len(k)) + k + struct.pack("<H", len(v)) + v
                    for k, v in pairs)
    return struct.pack("<BHB", 0, len(body), 0) + body


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    request: bytes) -> Probe:
    try:
        writer.write(request)
        await writer.drain()
        line = await reader.readline()
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    parts = line.decode("latin-1").split()
    if len(parts) >= 2 and parts[0].startswith("HTTP/") and parts[1].isdigit():
        return Probe(int(parts[1]), line.decode("latin-1").strip())
    return Probe(None, f"no HTTP status line (got {line[:60]!r})")


async def probe_socket(socket: Path, *, protocol: str, path: str, host: str = "localhost",
                       timeout: float = 5) -> Probe:
    """GET *path* from the server listening on *socket*, speaking *protocol*."""
    request = uwsgi_packet(path, host) if protocol == "uwsgi" else _http_request(path, host, {})
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_unix_connection(str(socket))
            return await _exchange(reader, writer, request)
    except TimeoutError:
        return Probe(None, f"no answer within {timeout:g}s")
    except OSError as e:
        return Probe(None, f"cannot connect to {socket}: {e.strerror or e}")


async def probe_url(url: str, *, host: str = "", headers: Mapping[str, str] | None = None,
                    timeout: float = 5) -> Probe:
    """GET *url* (http:// or https://), e.g. through nginx, with extra *headers*."""
    parts = urlsplit(url)
    https = parts.scheme == "https"
    port = parts.port or (443 if https else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    request = _http_request(target, host or parts.netloc, headers or {})
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(
                parts.hostname, port, ssl=https or None,
                server_hostname=(host or parts.hostname) if https else None,
            )
            return await _exchange(reader, writer, request)
    except TimeoutError:
        return Probe(None, f"no answer from {url} within {timeout:g}s")
    except OSError as e:
        return Probe(None, f"cannot connect to {url}: {e.strerror or e}")


def in_range(status: int | None, expect: tuple[int, int]) -> bool:
    return status is not None and expect[0] <= status <= expect[1]


async def wait_healthy(handle: ServerHandle, *, path: str, expect: tuple[int, int],
                       timeout: float, interval: float = 0.05) -> Probe:
    """Wait until *handle* is alive and answers *path* within *expect*, or raise Unhealthy.

    A server that exits stops the wait at once (its pidfd fires); the error carries the
    last lines of its log, which is what an operator needs (kamal-proxy #71).
    """
    deadline = time.monotonic() + timeout
    last = Probe(None, "not probed yet")
    pause = 0.01  # grows to *interval*: a fast boot is seen at once, a slow one cheaply
    while True:
        if not handle.alive:
            raise Unhealthy(
                f"release {handle.release}: app server exited (code {handle.returncode}) "
                f"before becoming healthy",
            )
        if handle.listener.exists():
            last = await probe_socket(handle.listener, protocol=handle.protocol, path=path,
                                      timeout=max(0.5, min(5, deadline - time.monotonic())))
            if in_range(last.status, expect):
                return last
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise Unhealthy(
                f"release {handle.release}: not healthy within {timeout:g}s "
                f"(GET {path}: {last.detail})",
            )
        # Wake early if the server dies; otherwise poll again: a socket cannot announce
        # that its application finished importing.
        await handle.wait_exited(min(pause, remaining))
        pause = min(pause * 1.5, interval)

"""A bounded HTTP load generator for swaps under traffic (tests, bench and demo).

Each worker thread sends requests one after another to a loopback URL until told to stop
or until its request budget runs out; every result is recorded with its latency.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

#: observe(started, ended, response, body): called for each request answered (any status)
Observe = Callable[[float, float, http.client.HTTPResponse, bytes], None]


@dataclass
class LoadResult:
    sent: int = 0
    failed: int = 0
    statuses: dict[int | str, int] = field(default_factory=dict)
    latencies: list[tuple[float, float]] = field(default_factory=list)  # (start, seconds)
    errors: list[str] = field(default_factory=list)
    connections: int = 0  # opened; fewer than sent when keep-alive reuses them

    def percentile(self, q: float, window: tuple[float, float] | None = None) -> float:
        values = sorted(d for t, d in self.latencies
                        if window is None or window[0] <= t <= window[1])
        if not values:
            return 0.0
        return values[min(len(values) - 1, int(q * len(values)))]


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over a unix socket path (which may be a symlink, like run/app.sock)."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.path)
        self.sock = sock


class Load:
    """`with Load(url, paths, concurrency) as load: ...`; then load.result.

    *url* is http://host:port, https://host:port (verified with *tls*, else the default
    context) or unix:/path/to/socket. *observe*, if given, sees every answer (times are
    time.monotonic(); it runs in the worker thread, so it must be quick).
    """

    def __init__(self, url: str, paths: tuple[str, ...] = ("/",), *, concurrency: int = 8,
                 max_requests: int = 100_000, max_seconds: float = 300,
                 host: str = "", keepalive: bool = False,
                 tls: ssl.SSLContext | None = None, observe: Observe | None = None) -> None:
        self.observe = observe
        self.unix = url.removeprefix("unix:") if url.startswith("unix:") else None
        parts = urlsplit(url)
        self.tls = (tls or ssl.create_default_context()) if parts.scheme == "https" else None
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or (443 if self.tls else 80)
        self.host_header = host
        self.paths, self.concurrency = paths, concurrency
        self.keepalive = keepalive  # each client reuses its connection while the server lets it
        self.max_requests, self.max_seconds = max_requests, max_seconds
        self.result = LoadResult()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def _connect(self) -> http.client.HTTPConnection:
        with self._lock:
            self.result.connections += 1
        if self.unix:
            return UnixHTTPConnection(self.unix, 30)
        if self.tls:
            return http.client.HTTPSConnection(self.host, self.port, timeout=30,
                                               context=self.tls)
        return http.client.HTTPConnection(self.host, self.port, timeout=30)

    def _one(self, path: str, conn: http.client.HTTPConnection | None = None
             ) -> http.client.HTTPConnection | None:
        """One request, on *conn* if given; the connection to reuse next, if any."""
        started = time.monotonic()
        status: int | str
        kept = None
        try:
            conn = conn or self._connect()
            headers = {"Host": self.host_header} if self.host_header else {}
            conn.request("GET", path, headers=headers)
            response = conn.getresponse()
            body = response.read()
            status = response.status
            if self.observe is not None:
                self.observe(started, time.monotonic(), response, body)
            if self.keepalive and not response.will_close:
                kept = conn
            else:
                conn.close()
        except (OSError, http.client.HTTPException) as e:
            status = type(e).__name__
            if conn is not None:
                conn.close()
        elapsed = time.monotonic() - started
        with self._lock:
            self.result.sent += 1
            self.result.statuses[status] = self.result.statuses.get(status, 0) + 1
            self.result.latencies.append((started, elapsed))
            if status != 200:
                self.result.failed += 1
                if len(self.result.errors) < 20:
                    self.result.errors.append(f"{path}: {status}")
        return kept

    def _worker(self, index: int) -> None:
        deadline = time.monotonic() + self.max_seconds
        n = index
        conn = None
        while not self._stop.is_set() and time.monotonic() < deadline:
            with self._lock:
                if self.result.sent >= self.max_requests:
                    break
            conn = self._one(self.paths[n % len(self.paths)], conn)
            n += 1
        if conn is not None:
            conn.close()

    def __enter__(self) -> Load:
        for i in range(self.concurrency):
            thread = threading.Thread(target=self._worker, args=(i,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> LoadResult:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)
        return self.result

    def __exit__(self, *exc: object) -> None:
        self.stop()

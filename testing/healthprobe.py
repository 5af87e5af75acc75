"""GET /health of the sample app over a unix socket, once or in a thread all along (bench
scripts: is the app serving, and did any request fail across a kill)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from testing.unixhttp import http_get


def get_health(sock: Path) -> tuple[int, int]:
    """(HTTP status, answering worker's pid) of GET /health over the unix socket *sock*."""
    status, body = http_get(sock, "/health", timeout=5)
    words = body.split()
    pid = int(words[words.index("pid") + 1]) if "pid" in words else 0
    return status, pid


def answers_from_new_server(sock: Path, old: set[int]) -> bool:
    """A 200 from a worker that is not one of the killed group's processes."""
    try:
        status, pid = get_health(sock)
    except (OSError, ValueError, IndexError):
        return False
    return status == 200 and pid not in old


@dataclass
class Prober:
    """GET /health every *interval* seconds in a thread; counts what did not answer 200."""

    sock: Path
    interval: float = 0.01
    sent: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sent += 1
            try:
                status, _pid = get_health(self.sock)
                error = "" if status == 200 else f"HTTP {status}"
            except (OSError, ValueError, IndexError) as e:
                error = f"{type(e).__name__}: {e}"
            if error:
                self.failed += 1
                self.errors.append(error)
            time.sleep(self.interval)

    def __enter__(self) -> Prober:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

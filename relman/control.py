"""The control socket: JSON lines between the CLI and the daemon, peer-checked.

A request is one line, `{"command": ..., "args": {...}, "client": {...}}`. The daemon answers
with any number of `{"type": "progress", "step": ..., "message": ...}` lines and then one
`{"type": "result", "data": ...}` or `{"type": "error", "error": {...}}` line; each kind of
data is a class in relman/results.py, which both ends share. While a job runs (or waits for
the one ahead), a `{"type": "keepalive"}` line comes every KEEPALIVE seconds, so the CLI can
tell a daemon that does not answer at all (relman/client.py gives up after a silence) from a
long quiet step. The job runs in the daemon, not in the connection:
a dropped SSH session ends the stream, never the deploy.
This is the daemon's side; relman/client.py is the CLI's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import struct
import time
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final

import structlog

from relman import __version__
from relman.errors import DaemonBug, RelmanError, UsageError
from relman.results import Result

log = structlog.get_logger(__name__)

Send = Callable[[dict[str, Any]], None]
Handler = Callable[[dict[str, Any], Send, tuple[int, int]], Awaitable[Result]]

MAX_LINE = 1 << 20
# Seconds between keepalive lines during a job: well under the CLI's silence limit
# (client.SILENCE, 30 s), which also covers a status request's 5 s health probe.
KEEPALIVE = 5.0


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end of a unix socket (SO_PEERCRED)."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", creds)
    return pid, uid, gid


def peer_allowed(uid: int, own_uid: int) -> bool:
    """Only the daemon's own user or root may drive it."""
    return uid in (own_uid, 0)


class BadRequest(ValueError):
    """A request line that is not a request: the client gets a usage error (exit 2)."""


def parse_request(line: bytes) -> dict[str, Any]:
    """The request on *line*, whose shape handlers may trust; else BadRequest saying why."""
    try:
        request = json.loads(line)
    except RecursionError:  # JSON nested thousands deep: not a ValueError, yet bad input
        raise BadRequest("JSON nested too deeply") from None
    if not isinstance(request, dict):
        raise BadRequest(f"expected an object, got {_json_kind(request)}")
    for key, kind in (("command", str), ("args", dict), ("client", dict)):
        if not isinstance(request.get(key, kind()), kind):
            raise BadRequest(f"{key!r} must be {_json_kind(kind())}, not "
                             f"{_json_kind(request[key])}")
    return request


# As `relman scale` takes them (views.parse_counts).
MAX_COUNT: Final = 9999


def scale_counts(value: object) -> dict[str, int]:
    """The counts of a scale request, {name: whole number 0..9999}; else a UsageError naming
    the bad one: a client other than the CLI may send anything (NaN, -1, "3", 1e9)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise UsageError(f"scale: 'counts' must be an object, not {_json_kind(value)}")
    for name, count in value.items():
        if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= MAX_COUNT:
            raise UsageError(f"relman scale {name}={count!r}: the count must be a whole "
                             f"number from 0 to {MAX_COUNT}")
    return {str(name): count for name, count in value.items()}


def _json_kind(value: object) -> str:
    kinds = ((bool, "a boolean"), (int | float, "a number"), (str, "a string"),
             (list, "an array"), (dict, "an object"))
    return next((name for cls, name in kinds if isinstance(value, cls)), "null")


class ControlServer:
    """Accepts requests on run/relman.ctl and hands each to *handler*."""

    #: a client that sends no request line within this many seconds is dropped
    request_timeout = 10.0

    def __init__(self, path: Path, handler: Handler, crash_log: Path | None = None) -> None:
        self.path, self.handler, self.crash_log = path, handler, crash_log
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        old = os.umask(0o177)  # created 0600: no window in which others may connect
        try:
            self._server = await asyncio.start_unix_server(self._serve, path=str(self.path),
                                                           limit=MAX_LINE)
        finally:
            os.umask(old)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        _pid, uid, gid = peer_credentials(sock)
        connected = True

        def send(message: dict[str, Any]) -> None:
            nonlocal connected
            if not connected or writer.is_closing():
                connected = False  # the client went away; the job goes on
                return
            writer.write((json.dumps(message) + "\n").encode())

        try:
            # Read the request before any answer, so a refusal is never lost to a reset.
            try:
                line = await asyncio.wait_for(reader.readline(), self.request_timeout)
            except TimeoutError:
                raise ValueError(f"no request line within {self.request_timeout:g} s") from None
            if not peer_allowed(uid, os.getuid()):
                send({"type": "error", "error": {"code": "usage", "exit_code": 2,
                      "message": f"uid {uid} may not control this daemon"}})
                return
            if not line:
                return  # the client went away before asking anything
            await self._answer(parse_request(line), send, (uid, gid))
            with contextlib.suppress(ConnectionError):
                await writer.drain()
        except ValueError as e:
            send({"type": "error", "error": {"code": "usage", "exit_code": 2,
                  "message": f"bad control request: {e}"}})
        except ConnectionError:
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    async def _answer(self, request: dict[str, Any], send: Send, peer: tuple[int, int]) -> None:
        """Run the handler; its result or error is the last message of the answer."""
        try:
            result = await self.handler(request, send, peer)
            send({"type": "result", "data": result.to_json()})
        except RelmanError as e:
            send({"type": "error", "error": e.to_dict()})
        except Exception as e:
            # reported as one, so the CLI exits 70 rather than "daemon unreachable"
            log.exception("control.request_failed", command=request.get("command"))
            # A daemon outside systemd (runuser, a test) has no journal: the traceback also
            # goes to a file under the app root, named only once it holds it.
            text = (f"--- {time.ctime()} relman {__version__} daemon pid {os.getpid()}, "
                    f"control request {request.get('command')!r}\n{traceback.format_exc()}")
            where = "its log"
            if self.crash_log is not None and append_crash_log(self.crash_log, text):
                where = f"{self.crash_log} and its log"
            send({"type": "error", "error": DaemonBug(
                f"internal error in the daemon ({type(e).__name__}): see {where} "
                "(journalctl -u relman@APP)").to_dict()})


def append_crash_log(path: Path, text: str) -> bool:
    """Append *text* to *path* in one write (O_APPEND: entries of two requests stay whole),
    creating it 0640 less the umask; False if the file system refuses."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW
                     | os.O_CLOEXEC, 0o640)
    except OSError:
        return False
    try:
        os.write(fd, text.encode(errors="replace"))
    except OSError:
        return False
    finally:
        os.close(fd)
    return True

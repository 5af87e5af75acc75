"""The CLI's side of the control socket (the protocol is described in relman/control.py).

Standard library only: every CLI command starts with this, over SSH too, so it stays light.
relman/results.py is imported only once a request is made: its dataclasses cost a few ms to
define, which `releases`, `history` and `logs` need not pay.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar, overload

from relman.errors import BadAnswer, DaemonUnreachable, UsageError, error_from_dict

if TYPE_CHECKING:
    from relman.results import Progress, Result

R = TypeVar("R", bound="Result")

# Seconds without a line from the daemon after which the CLI gives up on it. During a job the
# daemon sends a keepalive every 5 s (control.KEEPALIVE), and a status answer takes at most
# its 5 s health probe: a silence this long means the daemon's event loop is stuck, and
# waiting longer would hang `relman status` (and a CI deploy) forever.
SILENCE = 30.0
SILENCE_ENV = "RELMAN_DAEMON_TIMEOUT"


def silence_limit() -> float:
    """SILENCE, or RELMAN_DAEMON_TIMEOUT seconds when set."""
    value = os.environ.get(SILENCE_ENV, "")
    if not value:
        return SILENCE
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0.0
    if not 0 < seconds < float("inf"):
        raise UsageError(f"{SILENCE_ENV}={value!r}: not a positive number of seconds")
    return seconds


@overload
def request(path: Path, command: str, args: dict[str, object], client: dict[str, object],
            on_progress: Callable[[Progress], None] | None = None, *, into: type[R]) -> R: ...


@overload
def request(path: Path, command: str, args: dict[str, object], client: dict[str, object],
            on_progress: Callable[[Progress], None] | None = None, *,
            into: None = None) -> object: ...


def request(path: Path, command: str, args: dict[str, object], client: dict[str, object],
            on_progress: Callable[[Progress], None] | None = None, *,
            into: type[Result] | None = None) -> object:
    """Send one request and stream its answer; returns the result (parsed *into* that
    Result class, else as JSON) or raises its error."""
    from relman.results import Progress, json_kind

    for message in _exchange(path, {"command": command, "args": args, "client": client}):
        if not isinstance(message, dict):
            raise BadAnswer("a message", f"expected an object, got {json_kind(message)}")
        kind = message.get("type")
        if kind == "progress":
            if on_progress is not None:
                on_progress(Progress.from_json(message))
        elif kind == "keepalive":
            continue  # the daemon is alive and the job goes on
        elif kind == "result":
            data = message.get("data")
            return data if into is None else into.from_json(data)
        elif kind == "error":
            error = message.get("error")
            if not isinstance(error, dict):
                raise BadAnswer("error", f"expected an object, got {json_kind(error)}")
            raise error_from_dict(error)
    raise DaemonUnreachable("the daemon closed the connection without an answer",
                            hint="see its log: journalctl -u relman@APP")


def _not_answering(path: Path, seconds: float) -> DaemonUnreachable:
    return DaemonUnreachable(
        f"the daemon does not answer ({path}): nothing from it in {seconds:g} s",
        hint="see journalctl -u relman@APP; kill -9 it and systemd restarts it: the app "
             "keeps serving and the new daemon adopts it")


def _message(line: bytes) -> object:
    try:
        return json.loads(line)
    except (ValueError, RecursionError):
        text = line[:80].decode(errors="replace").strip()
        raise BadAnswer("a message", f"not JSON: {text!r}") from None


def _exchange(path: Path, payload: dict[str, object]) -> Iterator[object]:
    seconds = silence_limit()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(seconds)  # per silence: every line from the daemon starts it again
    try:
        sock.connect(str(path))
    except (TimeoutError, BlockingIOError):  # its accept queue is full: a stuck daemon
        sock.close()
        raise _not_answering(path, seconds) from None
    except (FileNotFoundError, ConnectionRefusedError):
        sock.close()
        raise DaemonUnreachable(
            f"the relman daemon is not running (no answer on {path})",
            hint="start it: systemctl start relman@APP, or `relman daemon` in the foreground",
        ) from None
    except PermissionError:
        sock.close()
        raise DaemonUnreachable(f"{path}: permission denied: run as the app's deploy user")\
            from None
    with sock, sock.makefile("rb") as f:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall((json.dumps(payload) + "\n").encode())  # a refusal may be waiting
        try:
            for line in f:
                yield _message(line)
        except ConnectionResetError:
            raise DaemonUnreachable("the daemon closed the connection") from None
        except TimeoutError:
            raise _not_answering(path, seconds) from None

"""The CLI's side of the control socket (the protocol is described in relman/control.py).

Standard library only: every CLI command starts with this, over SSH too, so it stays light.
"""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from relman.errors import DaemonUnreachable, error_from_dict


def request(path: Path, command: str, args: dict[str, Any], client: dict[str, Any],
            on_progress: Callable[[dict[str, Any]], None] | None = None) -> Any:
    """Send one request and stream its answer; returns the result or raises its error."""
    for message in _exchange(path, {"command": command, "args": args, "client": client}):
        kind = message.get("type")
        if kind == "progress":
            if on_progress is not None:
                on_progress(message)
        elif kind == "result":
            return message.get("data")
        elif kind == "error":
            raise error_from_dict(message.get("error") or {})
    raise DaemonUnreachable("the daemon closed the connection without an answer",
                            hint="see its log: journalctl -u relman@APP")


def _exchange(path: Path, payload: dict[str, Any]) -> Iterator[dict[str, Any]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(path))
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
                yield json.loads(line)
        except ConnectionResetError:
            raise DaemonUnreachable("the daemon closed the connection") from None

"""Wait for an old release's listening unix socket to hand over every queued connection."""

from __future__ import annotations

import asyncio
import errno
import os
import re
import socket
import struct
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

# None until the first query; False once netlink sock_diag proved unavailable, after which
# every query goes to `ss`. Tests flip it to exercise the fallback on a real socket.
CAN_USE_SOCK_DIAG: bool | None = None

# <linux/netlink.h>, <linux/sock_diag.h>, <linux/unix_diag.h>
_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLMSG_ERROR = 2
_NLMSG_DONE = 3
_NLM_F_REQUEST = 0x1
_NLM_F_DUMP = 0x300
_TCP_LISTEN = 10
_UDIAG_SHOW_NAME = 0x01
_UDIAG_SHOW_RQLEN = 0x10
_UNIX_DIAG_NAME = 0
_UNIX_DIAG_RQLEN = 4

_NLMSG_HDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_UNIX_DIAG_REQ = struct.Struct("=BBHIII2I")  # family, protocol, pad, states, ino, show, cookie
_UNIX_DIAG_MSG = struct.Struct("=BBBBI2I")  # family, type, state, pad, ino, cookie
_RTATTR = struct.Struct("=HH")  # len, type
_RQLEN = struct.Struct("=II")  # rqueue (accept queue for a listener), wqueue (backlog)


class _SockDiagUnavailableError(Exception):
    """The kernel or a sandbox refuses netlink sock_diag for AF_UNIX."""


@dataclass(frozen=True)
class DrainResult:
    """drained: seen empty (or gone) twice in a row; max_depth: deepest queue seen."""

    drained: bool
    waited: float
    max_depth: int
    polls: int


def _parse_unix_diag(msg: bytes, start: int, end: int) -> tuple[bytes, int] | None:
    """(path name, rqueue) of one unix_diag_msg; None for non-stream or abstract sockets."""
    _family, sock_type, _state, _pad, _ino, _c0, _c1 = _UNIX_DIAG_MSG.unpack_from(msg, start)
    if sock_type != socket.SOCK_STREAM:
        return None
    name: bytes | None = None
    rqueue: int | None = None
    pos = start + _UNIX_DIAG_MSG.size
    while pos + _RTATTR.size <= end:
        rta_len, rta_type = _RTATTR.unpack_from(msg, pos)
        if rta_len < _RTATTR.size:
            break
        payload = msg[pos + _RTATTR.size : pos + rta_len]
        if rta_type == _UNIX_DIAG_NAME:
            name = payload
        elif rta_type == _UNIX_DIAG_RQLEN:
            rqueue = _RQLEN.unpack_from(payload)[0]
        pos += (rta_len + 3) & ~3  # attributes are 4-byte aligned
    # Abstract names start with NUL; path names may carry the NUL that bind() counted.
    if not name or name[0] == 0 or rqueue is None:
        return None
    return name.split(b"\0", 1)[0], rqueue


def _sock_diag_depth(name: bytes) -> int | None:
    try:
        nl = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, _NETLINK_SOCK_DIAG)
    except OSError as exc:
        raise _SockDiagUnavailableError(str(exc)) from exc
    with nl:
        try:
            nl.bind((0, 0))
        except OSError as exc:
            raise _SockDiagUnavailableError(str(exc)) from exc
        # A dump of a few listeners takes well under a millisecond; the timeout only keeps a
        # wedged kernel reply from freezing the daemon's event loop forever.
        nl.settimeout(2.0)
        show = _UDIAG_SHOW_NAME | _UDIAG_SHOW_RQLEN
        no_cookie = (0xFFFFFFFF, 0xFFFFFFFF)
        req = _UNIX_DIAG_REQ.pack(socket.AF_UNIX, 0, 0, 1 << _TCP_LISTEN, 0, show, *no_cookie)
        hdr = _NLMSG_HDR.pack(
            _NLMSG_HDR.size + len(req), _SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST | _NLM_F_DUMP, 1, 0
        )
        nl.sendto(hdr + req, (0, 0))
        found: int | None = None
        while True:
            buf = nl.recv(1 << 16)
            pos = 0
            while pos + _NLMSG_HDR.size <= len(buf):
                msg_len, msg_type, _flags, _seq, _pid = _NLMSG_HDR.unpack_from(buf, pos)
                if msg_len < _NLMSG_HDR.size:
                    raise OSError(errno.EPROTO, "malformed netlink reply from sock_diag")
                body = pos + _NLMSG_HDR.size
                if msg_type == _NLMSG_DONE:
                    return found
                elif msg_type == _NLMSG_ERROR:
                    # e.g. ENOENT when the kernel lacks CONFIG_UNIX_DIAG
                    code = -struct.unpack_from("=i", buf, body)[0]
                    raise _SockDiagUnavailableError(os.strerror(code))
                elif msg_type == _SOCK_DIAG_BY_FAMILY:
                    entry = _parse_unix_diag(buf, body, pos + msg_len)
                    if entry is not None and entry[0] == name:
                        # Two listeners can share a name when one was unlinked and the path
                        # rebound; both queues must empty before the old server may stop.
                        found = (found or 0) + entry[1]
                pos += (msg_len + 3) & ~3


_SS_LINE = re.compile(r"^(\S+)\s+(\S+)\s+(\d+)\s+(\d+)\s+(.+?)\s+(\S+)\s+(\S+)\s+(\S+)\s*$")


def _ss_depth(name: str) -> int | None:
    argv = ["ss", "-xlnH"]
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=5, check=True).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        detail = (getattr(exc, "stderr", None) or "").strip() or exc
        raise RuntimeError(
            f"cannot read the accept queue of {name}: netlink sock_diag is unavailable "
            f"and `ss -xlnH` failed: {detail}"
        ) from exc
    found: int | None = None
    for line in out.splitlines():
        m = _SS_LINE.match(line)
        if m is None or m[1] != "u_str" or m[5] != name:
            continue
        # Without sock_diag, ss reads /proc/net/unix, which has no queue figures, and prints
        # 0 for both; a listener's Send-Q is its backlog, never 0 for an app server.
        if m[4] == "0":
            raise RuntimeError(
                f"cannot read the accept queue of {name}: `ss` has no sock_diag access "
                "either (it printed Send-Q 0 for a listener)"
            )
        found = (found or 0) + int(m[3])
    return found


def accept_queue_depth(path: Path | str) -> int | None:
    """Connections waiting in the accept queue of the unix stream listener bound at *path*.

    *path* must be the name the server bound (not a symlink to it). None: no listener
    has that name (the server is gone). RuntimeError: no way to ask the kernel.
    """
    global CAN_USE_SOCK_DIAG
    name = os.fspath(path)
    if CAN_USE_SOCK_DIAG is not False:
        try:
            depth = _sock_diag_depth(os.fsencode(name))
        except _SockDiagUnavailableError as exc:
            log.warning("drain.sock_diag_unavailable", reason=str(exc), fallback="ss")
            CAN_USE_SOCK_DIAG = False
        else:
            CAN_USE_SOCK_DIAG = True
            return depth
    return _ss_depth(name)


async def wait_drained(
    path: Path | str,
    *,
    timeout: float,
    interval: float = 0.02,
    clock: Callable[[], float] = time.monotonic,
) -> DrainResult:
    """Poll *path*'s accept queue until it is empty (or gone) twice in a row, or *timeout*.

    Two empty polls, not one: nginx may still be handing over connections it opened on
    the old socket just before the switch.
    """
    start = clock()
    quiet = polls = max_depth = 0
    drained = False
    while True:
        # In a thread: the netlink query is sub-millisecond, but its fallback runs `ss`,
        # and nothing that can block may run in the daemon's event loop.
        depth = await asyncio.to_thread(accept_queue_depth, path)
        polls += 1
        if depth:
            quiet = 0
            max_depth = max(max_depth, depth)
        else:
            quiet += 1
        if quiet >= 2:
            drained = True
            break
        elapsed = clock() - start
        if elapsed >= timeout:
            break
        # The kernel offers no notification when an accept queue empties, so poll.
        await asyncio.sleep(min(interval, timeout - elapsed))
    waited = clock() - start
    log.info(
        "drain.finished",
        socket=str(path),
        drained=drained,
        waited=round(waited, 3),
        max_depth=max_depth,
    )
    return DrainResult(drained=drained, waited=waited, max_depth=max_depth, polls=polls)

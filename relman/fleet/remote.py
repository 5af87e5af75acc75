"""One relman command on one fleet host, over the user's ssh: `relman --json ARGS` there, its
progress events echoed with the host's name as they arrive, its answer read from the last
JSON line. ssh's exit status 255 with no answer from relman is an unreachable host."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from relman.config_fleet import FleetConfig
from relman.fleet.connections import Connections
from relman.fleet.ssh import ssh_argv

__all__ = ["NOT_RUN", "SSH_UNREACHABLE", "Answer", "Echo", "Reply", "parse_json", "quiet",
           "read_lines", "run_on", "ssh_env", "text"]

#: ssh's exit status for its own errors (connection, authentication): relman never exits 255
SSH_UNREACHABLE: Final = 255
#: seconds the output of an ssh that has exited is still read
READ_AFTER_EXIT: Final = 5.0
#: Answer.code when ssh could not even be started
NOT_RUN: Final = -1
#: the longest line kept from a host (asyncio's readline stops at 64 KiB: a long build log
#: line); longer ones are dropped
LINE_LIMIT: Final = 16 * 2**20
#: how a coordinator shows one line: (host, step, message)
Echo = Callable[[str, str, str], None]


def quiet(_host: str, _step: str, _message: str) -> None:
    """An Echo that shows nothing (status polls)."""


def text(value: object) -> str | None:
    """A string field of a host's JSON answer (a release id, a version), or None when it is
    absent, empty or not a string: an odd answer is no crash of the coordinator."""
    return value if isinstance(value, str) and value else None


@dataclass(frozen=True, slots=True)
class Answer:
    """What *host* answered to one command."""

    host: str
    code: int  # ssh's exit status: relman's, or 255 for ssh's own failure
    result: Any  # the command's result (an object; `releases` a list); None if none
    error: dict[str, Any] | None  # relman's {"error": ...} object
    seconds: float
    said: tuple[str, ...] = ()  # its last lines that were not relman's JSON (ssh's errors)

    @property
    def ok(self) -> bool:
        return self.code == 0 and self.result is not None

    @property
    def unreachable(self) -> bool:
        return self.code == SSH_UNREACHABLE and self.error is None and self.result is None

    @property
    def reason(self) -> str:
        """One line: why it failed."""
        if self.error is not None:
            return str(self.error.get("message") or self.error.get("code") or "failed")
        last = self.said[-1] if self.said else ""
        if self.code == NOT_RUN:
            return last
        if self.unreachable:
            return f"ssh exit {self.code}{': ' + last if last else ''}"
        if self.code == 0:
            return "no answer from relman"
        return f"exit {self.code}{': ' + last if last else ''}"


@dataclass
class Reply:
    """One command's output as it comes: its progress echoed with the host's name, its
    result or error kept, its other lines (ssh's errors, junk) said; then its Answer."""

    host: str
    echo: Echo
    started: float = field(default_factory=time.monotonic)
    found: dict[str, Any] = field(default_factory=dict)
    said: list[str] = field(default_factory=list)

    def stdout(self, line: str, event: Any) -> None:
        """A line of its stdout, *event* its parse_json()."""
        if event is None:
            self.stderr(line)
        elif isinstance(event, dict) and event.get("type") == "progress":
            self.echo(self.host, str(event.get("step", "")), str(event.get("message", "")))
        elif isinstance(event, dict) and isinstance(event.get("error"), dict):
            self.found["error"] = event["error"]
        else:
            self.found["result"] = event

    def stderr(self, line: str) -> None:
        """A line that is not relman's JSON: said, and shown."""
        self.said.append(line)
        self.echo(self.host, "", line)

    def answer(self, code: int) -> Answer:
        return Answer(self.host, code, self.found.get("result"), self.found.get("error"),
                      round(time.monotonic() - self.started, 3), tuple(self.said[-3:]))


async def run_on(fleet: FleetConfig, host: str, args: Sequence[str], echo: Echo, *,
                 limit: asyncio.Semaphore | None = None,
                 connections: Connections | None = None) -> Answer:
    """`relman --json *args*` on *host*; *limit* bounds the ssh sessions at once, and
    *connections* (fleet.multiplex) gives each host one master connection.

    ssh runs in a session of its own: a Ctrl-C meant for the coordinator must not cut a
    host's switch in half (the coordinator stops in order and says so). stdin is /dev/null
    (BatchMode asks nothing anyway)."""
    control = connections.path(host) if connections is not None else None
    argv = ssh_argv(fleet, host, ["--json", *args], control_path=control)
    if limit is None:
        return await _run(host, argv, echo)
    async with limit:
        return await _run(host, argv, echo)


async def _run(host: str, argv: list[str], echo: Echo) -> Answer:
    reply = Reply(host, echo)
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, start_new_session=True, env=ssh_env())
    except OSError as e:  # no ssh at fleet.ssh[0], not executable, out of processes
        return Answer(host, NOT_RUN, None, None, 0.0, (f"cannot run {argv[0]}: {e.strerror}",))
    assert proc.stdout is not None
    assert proc.stderr is not None
    readers = asyncio.gather(
        read_lines(proc.stdout, lambda line: reply.stdout(line, parse_json(line)), reply.said),
        read_lines(proc.stderr, reply.stderr, reply.said))
    code = await proc.wait()
    try:  # a master connection forked by this ssh may hold a pipe open: not for long
        await asyncio.wait_for(readers, READ_AFTER_EXIT)
    except TimeoutError:
        reply.said.append(f"(output still open {READ_AFTER_EXIT:g}s after ssh exited: left)")
    return reply.answer(code)


def ssh_env() -> dict[str, str]:
    """The environment of ssh: this one without RELMAN_CONFIG (the coordinator's config)."""
    return {k: v for k, v in os.environ.items() if k != "RELMAN_CONFIG"}


async def read_lines(stream: asyncio.StreamReader, each: Callable[[str], None],
                 said: list[str]) -> None:
    """*each* non-blank line of *stream* until its end. A line longer than LINE_LIMIT is
    dropped (and said) and the lines after it still read: one huge build log line must
    not cost the answer that follows it."""
    line, skipping = bytearray(), False
    while chunk := await stream.read(2**16):
        start = 0
        while (end := chunk.find(b"\n", start)) != -1:
            if not skipping:
                line += chunk[start:end]
                _one(bytes(line), each)
            line.clear()
            skipping, start = False, end + 1
        if not skipping:
            line += chunk[start:]
        if len(line) > LINE_LIMIT:
            said.append(f"(a line of over {LINE_LIMIT // 2**20} MiB skipped)")
            line.clear()
            skipping = True
    if line and not skipping:
        _one(bytes(line), each)


def _one(raw: bytes, each: Callable[[str], None]) -> None:
    line = raw.decode(errors="replace").rstrip("\r")
    if line.strip():
        each(line)


def parse_json(line: str) -> Any:
    """*line* as relman's JSON (an object, or a list: `releases --json`); None if not."""
    if not line.startswith(("{", "[")):
        return None
    try:
        return json.loads(line)
    except (ValueError, RecursionError):  # not JSON; or nested past the parser's depth
        return None

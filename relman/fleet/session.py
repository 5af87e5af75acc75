"""One ssh session per fleet host for a whole run: `relman --json session` there, and each
command of the run (status, build, prepare, switch, canary looks, recovery) one line on its
stdin, answered by the command's JSON and a `done` line (relman/cli/session.py).

A run used to open an ssh session per step, and each paid for sshd's session and a start of
the host's relman CLI (about 0.3 s, on the critical path three or four times per host); a
session pays them once. The switch, a line on a session that is open already, reaches
every host within milliseconds of the others: the mixed-version window is the spread of
the hosts' own switch jobs.

Fallbacks, so that a session is never worse than a command per session:
- A host whose relman has no `session` (an older version, or a forced command of the user's
  own that runs something else): its commands go one ssh session each, as before.
- A session that ends (its connection lost, its host's sshd restarted): the commands under
  way are answered as far as they got (no answer: the caller asks the host's status, as for
  a lost ssh session), and the host's next commands go one ssh session each.
- A command whose caller gave up waiting (a status look timed out): its answer is read
  and dropped when it comes; until then the host's commands go one ssh session each, not
  behind it (a recovery must not wait for a status that hangs).
- A command whose words hold a line break (or cannot be encoded) is not a line: it goes
  in an ssh session of its own.

A run holds a process and three pipes per host for its whole length, so the coordinator
raises its soft limit of open files to the hard one (a fleet of hundreds of hosts)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import shlex
import signal
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from relman.config_fleet import FleetConfig
from relman.fleet.connections import Connections
from relman.fleet.remote import (
    NOT_RUN,
    READ_AFTER_EXIT,
    SSH_UNREACHABLE,
    Answer,
    Echo,
    Reply,
    parse_json,
    read_lines,
    run_on,
    ssh_env,
)
from relman.fleet.ssh import ssh_argv

__all__ = ["Sessions"]

#: seconds a session gets to end after its stdin is closed, before its ssh is terminated
CLOSE_WAIT: Final = 10.0


@dataclass
class _Waiting(Reply):
    """One command sent on a session, until its `done` line."""

    answered: asyncio.Future[Answer] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future())

    def done(self, code: int) -> None:
        if not self.answered.done():  # else its caller has given up waiting
            self.answered.set_result(self.answer(code))


class HostSession:
    """`relman --json session` on one host, over its own ssh process."""

    def __init__(self, host: str, argv: list[str]) -> None:
        self.host, self.argv = host, argv
        self.proc: asyncio.subprocess.Process | None = None
        self.ready: asyncio.Future[bool] | None = None  # its hello line came (or not)
        self.waiting: deque[_Waiting] = deque()
        self.between: Reply | None = None  # its lines outside any command (ssh's errors)
        self.ended: int | None = None  # ssh's exit status, once it has exited
        self.watcher: asyncio.Task[None] | None = None
        self.opening = asyncio.Lock()
        self.opened = 0  # ssh sessions to the host: this one, and each command alone

    async def ask(self, args: Sequence[str], echo: Echo) -> Answer | None:
        """Run `relman ARGS` on the session; None when there is none to run it on (the
        caller runs it over an ssh session of its own)."""
        async with self.opening:
            if self.ready is None:
                refused = await self._open(echo)
                if refused is not None:
                    return refused
        if self.ready is not None and not self.ready.done():
            await asyncio.shield(self.ready)  # an opening whose first caller gave up
        line = _line(args)
        proc = self.proc
        if (line is None or self.ended is not None or proc is None or proc.stdin is None
                or proc.returncode is not None
                or any(w.answered.done() for w in self.waiting)):
            return None
        waiting = _Waiting(self.host, echo)
        self.waiting.append(waiting)
        try:
            proc.stdin.write(line)
            await proc.stdin.drain()
        except (ConnectionError, RuntimeError):
            pass  # it has ended: the watcher answers it with what came
        return await waiting.answered

    async def _open(self, echo: Echo) -> Answer | None:
        """Start it and wait for its hello. An Answer when the host cannot be reached (ssh
        exit 255): the command is answered so, as one run by itself would be. None when it
        is open, or when the host cannot run a session (self.ended is set: a command each)."""
        self.ready = asyncio.get_running_loop().create_future()
        self.between = between = Reply(self.host, echo)
        self.opened += 1
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, start_new_session=True, env=ssh_env())
        except OSError as e:  # no ssh at fleet.ssh[0], not executable, out of processes
            self.ended = NOT_RUN
            return Answer(self.host, NOT_RUN, None, None, 0.0,
                          (f"cannot run {self.argv[0]}: {e.strerror}",))
        self.watcher = asyncio.create_task(self._watch(between))
        await asyncio.shield(self.ready)
        if self.ended == SSH_UNREACHABLE:
            return between.answer(SSH_UNREACHABLE)
        return None

    async def _watch(self, between: Reply) -> None:
        """Read its output until ssh exits; then answer whatever still waits. Whatever
        goes wrong here (a bug), the session ends and nothing waits for it forever."""
        proc = self.proc
        assert proc is not None
        assert proc.stdout is not None
        assert proc.stderr is not None
        code = NOT_RUN
        try:
            readers = asyncio.gather(read_lines(proc.stdout, self._on_stdout, between.said),
                                     read_lines(proc.stderr, self._on_stderr, between.said))
            exited = asyncio.ensure_future(proc.wait())
            either: set[asyncio.Future[Any]] = {exited, readers}
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
            if readers.done() and not readers.cancelled() and readers.exception():
                readers.result()  # a reader failed (a bug): the session is of no more use
            code = await exited
            with contextlib.suppress(TimeoutError):  # a master it forked may hold a pipe
                await asyncio.wait_for(readers, READ_AFTER_EXIT)
        finally:
            self.ended = code
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)  # its own group (start_new_session)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(proc.wait(), CLOSE_WAIT)
            if self.ready is not None and not self.ready.done():
                self.ready.set_result(False)
            while self.waiting:
                self.waiting.popleft().done(code)

    def _on_stdout(self, line: str) -> None:
        event = parse_json(line)
        if self._before_hello(event):
            return
        if self.waiting and isinstance(event, dict) and event.get("type") == "done":
            code = event.get("exit")
            self.waiting.popleft().done(code if isinstance(code, int) else 1)
        else:
            self._now().stdout(line, event)

    def _on_stderr(self, line: str) -> None:
        self._now().stderr(line)

    def _now(self) -> Reply:
        """Whose output comes now: the command answered next, else nobody's."""
        if self.waiting:
            return self.waiting[0]
        assert self.between is not None
        return self.between

    def _before_hello(self, event: object) -> bool:
        """True when *event* was the session's hello, or its refusal to start."""
        if self.ready is None or self.ready.done() or not isinstance(event, dict):
            return False
        if event.get("type") == "session":
            self.ready.set_result(True)
            return True
        if isinstance(event.get("error"), dict):  # no session there: `relman session`
            assert self.between is not None  # refused it, or does not know it
            self.between.said.append(str(event["error"].get("message", "")))
            return True
        return False

    async def close(self) -> None:
        """End it: its stdin closed (it ends after the command under way), its ssh
        terminated if it has not ended within CLOSE_WAIT."""
        proc = self.proc
        if proc is None or self.watcher is None:
            return
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            await asyncio.wait_for(asyncio.shield(self.watcher), CLOSE_WAIT)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)  # its own group (start_new_session)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.watcher, CLOSE_WAIT)
        except Exception:  # noqa: BLE001, S110 - a failed watcher has ended its session
            pass


def _line(args: Sequence[str]) -> bytes | None:
    """*args* as one session line; None when they cannot be one."""
    words = shlex.join(args)
    if "\n" in words or "\r" in words:
        return None
    try:
        return (words + "\n").encode()
    except UnicodeEncodeError:  # a lone surrogate (a non-UTF-8 argument)
        return None


def raise_open_files_limit() -> None:
    """The soft limit of open files up to the hard one."""
    with contextlib.suppress(ValueError, OSError):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Sessions:
    """A run's sessions, one per host, opened by the host's first command."""

    def __init__(self, fleet: FleetConfig, connections: Connections,
                 limit: asyncio.Semaphore) -> None:
        self.fleet, self.connections, self.limit = fleet, connections, limit
        raise_open_files_limit()
        self.sessions = {h: HostSession(h, ssh_argv(fleet, h, ["--json", "session"],
                                                    control_path=connections.path(h)))
                         for h in fleet.hosts}

    async def ask(self, host: str, args: Sequence[str], echo: Echo) -> Answer:
        """`relman --json ARGS` on *host*: a line on its session, or an ssh session of its
        own when it has none; at most fleet.parallel commands run at once."""
        async with self.limit:
            session = self.sessions[host]
            answer = await session.ask(args, echo)
            if answer is not None:
                return answer
            session.opened += 1
            return await run_on(self.fleet, host, args, echo, connections=self.connections)

    def opened(self, host: str) -> int:
        """The ssh sessions opened to *host* so far."""
        return self.sessions[host].opened

    async def close(self) -> None:
        await asyncio.gather(*(s.close() for s in self.sessions.values()))

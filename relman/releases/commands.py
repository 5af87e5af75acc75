"""Run a build-time command (git, uv, pip, build and release commands) with its output logged."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from relman.errors import writing
from relman.redact import redact_bytes, redact_url

OnLine = Callable[[str], None]

# Variables that would point git at another repository or identity than the mirror's
# (pre-commit's no_git_env, pre-commit #300: hooks run inside `git commit` inherit GIT_DIR).
GIT_VARS_KEPT = frozenset({"GIT_SSH", "GIT_SSH_COMMAND", "GIT_ASKPASS", "GIT_TERMINAL_PROMPT"})


def clean_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The daemon's environment without GIT_* (but the ssh/askpass ones) and VIRTUAL_ENV."""
    base = dict(os.environ if env is None else env)
    return {
        k: v
        for k, v in base.items()
        if (not k.startswith("GIT_") or k in GIT_VARS_KEPT) and k != "VIRTUAL_ENV"
    }


@dataclass(frozen=True, slots=True)
class CommandResult:
    argv: tuple[str, ...]
    returncode: int
    tail: str  # the last lines of combined output


def tail_lines(text_lines: Sequence[str], n: int = 20) -> str:
    return "\n".join(text_lines[-n:])


async def run_logged(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    log_path: Path,
    on_line: OnLine | None = None,
    timeout: float | None = None,
    umask: int = -1,
) -> CommandResult:
    """Run *argv*, appending its output to *log_path*; cancelling the caller kills it.

    The command runs in its own process group, so a cancelled deploy also stops whatever it
    spawned (pip's build backends, a migration's workers). Credentials in URLs (app.repo,
    an index URL) are hidden in the log, the lines and the tail; *umask* is the child's
    (-1: the daemon's).
    """
    recent: list[str] = []
    with writing(log_path), log_path.open("ab") as log:  # a full disk: StateWriteFailed
        log.write(redact_url(f"$ {' '.join(argv)}\n").encode())
        log.flush()
        proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=cwd,
            env=dict(env),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
            umask=umask,
        )
        try:
            async with asyncio.timeout(timeout):
                assert proc.stdout is not None
                async for raw in proc.stdout:
                    raw = redact_bytes(raw)
                    log.write(raw)
                    # git and pip redraw progress with \r: keep the last state of the line
                    line = raw.decode(errors="replace").rstrip().rsplit("\r", 1)[-1]
                    recent.append(line)
                    del recent[:-50]
                    if on_line is not None and line:
                        on_line(line)
                returncode = await proc.wait()
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 9)  # our own child's group: it cannot have been reused yet
            await proc.wait()
            raise
    return CommandResult(tuple(argv), returncode, tail_lines(recent))

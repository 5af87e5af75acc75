"""`relman session`: relman commands read from stdin, one per line, each answered as with
--json and ended by a `done` line. A fleet coordinator runs one on each host (issue 10), so
a fleet deploy costs a host one ssh session and one start of this CLI, where one session
per step (status, build, prepare, switch, each canary look) cost a start each, on the
critical path.

    -> {"type": "session", "version": "1.2.0"}      (once, when it is ready)
    <- status
    -> {"live": "...", ...}
    -> {"type": "done", "exit": 0}
    <- deploy v2 --prepare --no-release-phase
    -> {"type": "progress", ...}                   (as the job runs)
    -> {"error": {...}}                            (or its result)
    -> {"type": "done", "exit": 4}

A line is taken as ssh-command takes SSH_ORIGINAL_COMMAND: shell quoted, `relman` and
--json optional, --app and --config only naming this app, and only a command ssh-command
lets through (not `session` itself, nor `logs`). Behind a forced command it is one of those, and its
lines keep the key's `--as` label.

It ends at the end of stdin: the coordinator's close, or its death or its connection's (ssh
ends the session's stdin). A command under way finishes first; its job is the daemon's,
whoever waits for it, so the coordinator's death changes nothing a step has begun."""

from __future__ import annotations

import json
import sys

import click

from relman import __version__
from relman.cli.context import Context
from relman.cli.failures import say
from relman.cli.ssh import SSH_ALLOWED, run_allowed

#: what a session line may run: not `session` itself, nor `logs` (`logs -f` never ends,
#: and a log line could pass for a session's own)
SESSION_ALLOWED = SSH_ALLOWED - {"session", "logs"}


@click.command("session")
@click.pass_context
def session(click_ctx: click.Context) -> None:
    """Run relman commands read from stdin, one per line, each answered in JSON and ended
    by a `done` line with its exit code (for fleet coordinators)."""
    ctx: Context = click_ctx.obj
    ctx.json = True
    say(json.dumps({"type": "session", "version": __version__}))
    for raw in sys.stdin.buffer:
        line = raw.decode(errors="replace").strip()
        if line:
            say(json.dumps({"type": "done", "exit": run_line(click_ctx, line)}))


def run_line(click_ctx: click.Context, line: str) -> int:
    """Run one session line; its exit code (a failed command has said why in JSON)."""
    try:
        run_allowed(click_ctx, line, "session", SESSION_ALLOWED)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else int(e.code is not None)
    return 0

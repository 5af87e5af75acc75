"""How the CLI ends on an error: one line and the documented exit code, or for a bug, exit
70 and the traceback in a crash log it names only once it has written it."""

from __future__ import annotations

import contextlib
import json
import os
import stat
import sys
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from relman import __version__
from relman.errors import INTERNAL_ERROR_EXIT, RelmanError, UsageError

if TYPE_CHECKING:
    import click


@contextlib.contextmanager
def error_handler(as_json: bool) -> Iterator[None]:
    """error_funnel() for a click command: click's own errors (usage, abort) too."""
    import click

    with error_funnel(as_json):
        try:
            yield
        except click.exceptions.Exit as e:
            raise SystemExit(e.exit_code) from None
        except click.UsageError as e:
            if type(e).__name__ == "NoArgsIsHelpError":  # `relman` alone: click 8.2+ helps
                e.show()
                raise SystemExit(2) from None
            report(one_line(e), as_json)
        except click.ClickException as e:
            e.show()
            raise SystemExit(2) from None
        except click.exceptions.Abort:
            say("aborted", err=True)
            raise SystemExit(130) from None


@contextlib.contextmanager
def error_funnel(as_json: bool) -> Iterator[None]:
    """Turn every error into one line and its exit code; bugs get exit 70 and a log file.
    Without click: `relman daemon` runs without it (relman.cli.daemon)."""
    try:
        yield
    except RelmanError as e:
        report(e, as_json)
    except (KeyboardInterrupt, SystemExit, BrokenPipeError):
        raise
    except Exception:  # noqa: BLE001 - the one funnel for bugs: exit 70 with a pointer
        text = f"--- {time.ctime()} relman {__version__} {sys.argv}\n{traceback.format_exc()}"
        written = write_crash_log(text, os.environ)
        if written is None:  # nowhere to write it: the traceback itself, not a dead pointer
            say(text.rstrip("\n"), err=True)
            say("relman: internal error (a bug): no crash log could be written; the "
                "traceback is above", err=True)
        else:
            say(f"relman: internal error (a bug): see {written}", err=True)
        raise SystemExit(INTERNAL_ERROR_EXIT) from None


def say(text: str, *, err: bool = False) -> None:
    """One line of output, to stderr with *err* (click.echo's job, without click)."""
    print(text, file=sys.stderr if err else sys.stdout, flush=True)


def report(error: RelmanError, as_json: bool) -> None:
    """Print *error* (as JSON with --json) and exit with its code."""
    if as_json:
        say(json.dumps({"error": error.to_dict()}))
    else:
        say(f"relman: error: {error.message}", err=True)
        if error.tail:
            say("  " + error.tail.replace("\n", "\n  "), err=True)
        if error.hint:
            say(f"  hint: {error.hint}", err=True)
    raise SystemExit(error.exit_code) from None


def one_line(error: click.UsageError) -> UsageError:
    """click's usage error as relman's: one line naming the command (`relman history:
    Invalid value for '-n' / '--limit': ...`, as `relman scale: ...`), not click's block of
    usage, "Try ... --help" and error."""
    where = error.ctx.command_path if error.ctx and error.ctx.parent else ""
    message = error.format_message()
    return UsageError(f"{where}: {message}" if where else message)


def crash_log_places(env: dict[str, str] | os._Environ[str]) -> list[Path]:
    """Where the CLI's crash log may go, best first: $XDG_STATE_HOME/relman/crash.log,
    ~/.local/state/relman/crash.log."""
    places = []
    if env.get("XDG_STATE_HOME"):
        places.append(Path(env["XDG_STATE_HOME"]) / "relman" / "crash.log")
    with contextlib.suppress(RuntimeError, KeyError):  # no HOME and no passwd entry
        places.append(Path.home() / ".local" / "state" / "relman" / "crash.log")
    return places


def write_crash_log(text: str, env: dict[str, str] | os._Environ[str]) -> Path | None:
    """Append *text* to the first crash log that takes it and return its path: one of
    crash_log_places(), else <tmp>/relman-crash-<uid>.log (a HOME that is read-only, or
    /nonexistent for a system user); None when none does."""
    for path in crash_log_places(env):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a") as f:
                f.write(text)
        except OSError:
            continue
        return path
    import tempfile  # only here: the daemon runs without it (issue 11)

    shared = Path(tempfile.gettempdir()) / f"relman-crash-{os.getuid()}.log"
    try:
        # A shared directory: never follow a link, and append only to a plain file of our
        # own that has no other name (another user may have made one there first). A FIFO
        # would block the open until someone reads it: O_NONBLOCK makes that ENXIO.
        fd = os.open(shared, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW
                     | os.O_NONBLOCK, 0o600)
    except OSError:
        return None
    with os.fdopen(fd, "a") as f:
        info = os.fstat(fd)
        if not (stat.S_ISREG(info.st_mode) and info.st_uid == os.getuid()
                and info.st_nlink == 1):
            return None
        try:
            f.write(text)
            f.flush()
        except OSError:
            return None
    return shared

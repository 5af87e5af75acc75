"""User-visible errors. Leaf module: imports nothing from relman.

RelmanError                     exit 1: failed, the previous release still serves
├── UsageError                  exit 2
│   ├── ConfigError             (file, key, reason)
│   └── BadRef                  (ref, reason)
├── DeployFailed                exit 1
│   ├── FetchFailed · BuildFailed · ReleasePhaseFailed
│   └── Unhealthy · PreviewFailed · LiveCheckFailed
├── NoRollbackTarget            exit 1
├── NothingLive                 exit 1: `relman run` before the first deploy
├── CommandNotExecutable        exit 126: `relman run`'s command cannot be executed
├── CommandNotFound             exit 127: `relman run`'s command is nowhere (as in a shell)
├── StateWriteFailed            exit 1: the file system refused a write (full, quota,
│                               read-only, I/O error); the job ends, the live release serves
├── DaemonUnreachable           exit 3
├── LockHeld                    exit 4
└── DaemonBug                   exit 70: a bug in the daemon, reported over the socket
    └── BadAnswer               (where, reason): an answer the CLI cannot read

Bugs are not RelmanErrors: the CLI maps any other exception to exit 70 (EX_SOFTWARE) with one
line pointing to the log, where the traceback is.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar, Final

INTERNAL_ERROR_EXIT = 70

# What a file system says when it cannot take a write, whatever relman's own code does.
WRITE_REFUSED: Final = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO})


class RelmanError(Exception):
    """Base of every error a user can cause or see; carries an exit code and a stable code."""

    exit_code: ClassVar[int] = 1
    code: ClassVar[str] = "failed"

    def __init__(self, message: str, *, hint: str | None = None, tail: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.tail = tail  # last lines of a failing step's output, shown under the message

    def to_dict(self) -> dict[str, Any]:
        """The fields --json and the control protocol carry."""
        return {
            "code": self.code,
            "message": self.message,
            "hint": self.hint,
            "tail": self.tail,
            "exit_code": self.exit_code,
            **{k: getattr(self, k) for k in STRUCTURED_FIELDS if hasattr(self, k)},
        }


# Fields of particular errors that --json carries as they are (ConfigError, BadRef,
# BadAnswer).
STRUCTURED_FIELDS = ("file", "key", "reason", "ref", "where")


class UsageError(RelmanError):
    exit_code = 2
    code = "usage"


class ConfigError(UsageError):
    code = "config-invalid"

    def __init__(self, file: Path | str, key: str, reason: str) -> None:
        super().__init__(f"{file}: {key}: {reason}" if key else f"{file}: {reason}")
        self.file, self.key, self.reason = str(file), key, reason


class BadRef(UsageError):
    code = "bad-ref"

    def __init__(self, ref: str, reason: str) -> None:
        super().__init__(f"ref {ref!r}: {reason}")
        self.ref, self.reason = ref, reason


class UnknownRelease(UsageError):
    code = "unknown-release"


class DeployFailed(RelmanError):
    code = "deploy-failed"


class FetchFailed(DeployFailed):
    code = "fetch-failed"


class BuildFailed(DeployFailed):
    code = "build-failed"


class ReleasePhaseFailed(DeployFailed):
    code = "release-phase-failed"


class Unhealthy(DeployFailed):
    code = "unhealthy"


class ProcessFailed(DeployFailed):
    """A new process instance did not stay up its start_seconds."""

    code = "process-failed"


class PreviewFailed(DeployFailed):
    code = "preview-failed"


class LiveCheckFailed(DeployFailed):
    code = "live-check-failed"


class NoRollbackTarget(RelmanError):
    code = "no-rollback-target"


class FleetFailed(RelmanError):
    """`relman fleet`: the fleet did not end where it was asked to (its table says how each
    host ended), or `fleet status` found it mixed, unhealthy or partly unreachable."""

    code = "fleet-failed"


class NotRunning(RelmanError):
    code = "not-running"


class NothingLive(RelmanError):
    code = "nothing-live"


class CommandNotExecutable(RelmanError):
    """`relman run`'s command exists but cannot be executed: exit 126, as in a shell."""

    exit_code = 126
    code = "command-not-executable"


class CommandNotFound(RelmanError):
    """`relman run`'s command is neither in the release's venv nor on PATH: exit 127, as in
    a shell (a script can tell it from the command's own failures)."""

    exit_code = 127
    code = "command-not-found"


class StateWriteFailed(RelmanError):
    """A write relman needs was refused by the file system: "no space left on device (PATH)"."""

    code = "state-write-failed"

    def __init__(self, path: Path | str, errnum: int) -> None:
        reason = os.strerror(errnum)
        super().__init__(f"{reason[:1].lower()}{reason[1:]} ({path})",
                         hint="free space on that file system (or repair it); the live release "
                              "keeps serving and the next job tries again")
        self.file = str(path)


@contextlib.contextmanager
def writing(path: Path | str | None = None) -> Iterator[None]:
    """Turn a file system's refusal of a write inside the block (ENOSPC, EDQUOT, EROFS, EIO)
    into StateWriteFailed naming *path* (else the path the OSError names)."""
    try:
        yield
    except OSError as e:
        if e.errno not in WRITE_REFUSED:
            raise
        raise StateWriteFailed(path or e.filename or "a file under the app root",
                               e.errno) from e


class DaemonUnreachable(RelmanError):
    exit_code = 3
    code = "daemon-unreachable"


class LockHeld(RelmanError):
    exit_code = 4
    code = "lock-held"


class DaemonBug(RelmanError):
    """A bug inside the daemon, carried to the CLI so that it exits 70, not 3."""

    exit_code = INTERNAL_ERROR_EXIT
    code = "internal"


class BadAnswer(DaemonBug):
    """An answer from the daemon that is not what this CLI reads (relman/results.py): a bug,
    or a daemon of another relman version still running after an upgrade."""

    code = "bad-answer"

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"unexpected answer from the daemon: {where}: {reason}",
                         hint="if relman was upgraded since the daemon started, replace "
                              "the daemon without stopping the app: kill -9 $(systemctl "
                              "show --property MainPID --value relman@APP)")
        self.where, self.reason = where, reason


BY_CODE: dict[str, type[RelmanError]] = {
    cls.code: cls
    for cls in (
        RelmanError, UsageError, ConfigError, BadRef, UnknownRelease, DeployFailed, FetchFailed,
        BuildFailed, ReleasePhaseFailed, Unhealthy, ProcessFailed, PreviewFailed,
        LiveCheckFailed, NoRollbackTarget, FleetFailed, NotRunning, NothingLive,
        CommandNotExecutable,
        CommandNotFound, StateWriteFailed, DaemonUnreachable, LockHeld,
        DaemonBug, BadAnswer,
    )
}


def error_from_dict(data: dict[str, Any]) -> RelmanError:
    """Rebuild an error sent over the control socket, keeping its exit code and code."""
    cls = BY_CODE.get(str(data.get("code")), RelmanError)
    err = RelmanError.__new__(cls)
    RelmanError.__init__(
        err, str(data.get("message", "")), hint=data.get("hint"), tail=str(data.get("tail") or "")
    )
    for key in STRUCTURED_FIELDS:
        if key in data:
            setattr(err, key, data[key])
    return err

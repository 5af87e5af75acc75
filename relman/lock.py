"""Kernel file locks (flock): held by a live process or by nobody, so they cannot go stale."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from relman.errors import writing


class Busy(Exception):
    """The lock is held by another open file description; .holder says who, if recorded."""

    def __init__(self, path: Path, holder: dict[str, Any]) -> None:
        super().__init__(f"{path} is locked")
        self.path, self.holder = path, holder


class FileLock:
    """An exclusive flock on *path*; the holder's description is written into the file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, holder: dict[str, Any] | None = None, *, blocking: bool = False) -> None:
        """Take the lock or raise Busy with the current holder's description. A *holder*
        record the file system refuses (full disk) raises StateWriteFailed, lock not held;
        without one, nothing is written (read_holder() then says {})."""
        with writing(self.path):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            raise Busy(self.path, read_holder(self.path)) from None
        try:
            with writing(self.path):
                os.ftruncate(fd, 0)  # never refused: it frees space
                if holder is not None:
                    os.pwrite(fd, json.dumps(holder).encode(), 0)
        except BaseException:
            os.close(fd)  # drops the flock: a failed acquire must not leave it held
            raise
        self._fd = fd

    def release(self) -> None:
        """Let go; closing the descriptor drops the flock."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)
        os.close(self._fd)
        self._fd = None


def read_holder(path: Path) -> dict[str, Any]:
    """What the holder wrote into the lock file (who, since); {} when unknown."""
    try:
        data = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


@contextlib.contextmanager
def locked(path: Path, holder: dict[str, Any] | None = None) -> Iterator[FileLock]:
    """Hold the lock for the duration of the block."""
    lock = FileLock(path)
    lock.acquire(holder)
    try:
        yield lock
    finally:
        lock.release()

"""Atomic filesystem primitives: readers see the old state or the new one, never a mix."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from relman.errors import writing


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink inside *path* durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _removed_on_failure(tmp: Path) -> Iterator[None]:
    """Remove *tmp* if the block fails: a crashed attempt leaves no temp file behind."""
    try:
        yield
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def _write_synced(tmp: Path, data: bytes, mode: int) -> None:
    """Write *data* to the temp file *tmp* and fsync it."""
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def write_atomic(path: Path, data: bytes, mode: int = 0o640) -> None:
    """Replace *path* with *data*: temp file in the same directory, fsync, rename, fsync dir.
    A full (or read-only, or failing) file system raises StateWriteFailed naming *path*."""
    tmp = _tmp_name(path)
    with writing(path):
        with _removed_on_failure(tmp):
            _write_synced(tmp, data, mode)
            os.replace(tmp, path)
        fsync_dir(path.parent)


def create_once(path: Path, data: bytes, mode: int = 0o600) -> bytes:
    """Publish *data* at *path* unless a file is already there, whole (a hard link of a
    synced temp file, which never replaces one); returns what *path* holds either way, so
    two processes racing to create it agree on one content."""
    tmp = _tmp_name(path)
    with writing(path):
        with _removed_on_failure(tmp):
            _write_synced(tmp, data, mode)
            try:
                os.link(tmp, path)
            except FileExistsError:
                data = path.read_bytes()
        tmp.unlink()
        fsync_dir(path.parent)
    return data


def write_json_atomic(path: Path, obj: Any, mode: int = 0o640) -> None:
    """write_atomic() of *obj* as indented JSON."""
    write_atomic(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode(), mode)


def replace_symlink(link: Path, target: Path | str) -> None:
    """Point *link* at *target* in one step: os.symlink(tmp) + os.replace(tmp, link).

    A non-atomic `rm current; ln -s` leaves a window with no link at all (Deployer #691).
    """
    tmp = _tmp_name(link)
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    with writing(link):
        os.symlink(target, tmp)
        with _removed_on_failure(tmp):
            try:
                os.replace(tmp, link)
            except IsADirectoryError:  # another tool made a directory of it: never a wedge
                set_aside(link, reason="a directory where a symlink belongs")
                os.replace(tmp, link)
        fsync_dir(link.parent)


def read_link(link: Path) -> str | None:
    """The target of *link*, or None when it does not exist."""
    try:
        return os.readlink(link)
    except (FileNotFoundError, OSError):
        return None


def set_aside(path: Path, *, reason: str = "") -> Path:
    """Rename state that cannot be read (a file, or a directory where a link belongs) to
    `NAME.corrupt-<UTC time>` beside it, with a warning event; returns the new path.

    Nothing unreadable may stop the daemon (DESIGN section 6), and nothing is deleted:
    the file stays for a post-mortem.
    """
    import structlog  # here: `relman history` and `releases` import this module, not structlog

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    dest = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while os.path.lexists(dest):  # two in one second: never replace the first
        dest, n = path.with_name(f"{path.name}.corrupt-{stamp}.{n}"), n + 1
    os.rename(path, dest)
    fsync_dir(path.parent)
    structlog.get_logger(__name__).warning("state.set_aside", path=str(path), to=dest.name,
                                           reason=reason)
    return dest


def current_umask() -> int:
    """The process's umask, read without changing it (os.umask() would, for every thread)."""
    with contextlib.suppress(OSError), open("/proc/self/status") as status:
        for line in status:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    return 0o022  # a kernel before 4.7: the usual default

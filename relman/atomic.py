"""Atomic filesystem primitives: readers see the old state or the new one, never a mix."""

from __future__ import annotations

import contextlib
import json
import os
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


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def write_atomic(path: Path, data: bytes, mode: int = 0o640) -> None:
    """Replace *path* with *data*: temp file in the same directory, fsync, rename, fsync dir.
    A full (or read-only, or failing) file system raises StateWriteFailed naming *path*."""
    tmp = _tmp_name(path)
    with writing(path):
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise
        fsync_dir(path.parent)


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
        try:
            os.replace(tmp, link)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise
        fsync_dir(link.parent)


def read_link(link: Path) -> str | None:
    """The target of *link*, or None when it does not exist."""
    try:
        return os.readlink(link)
    except (FileNotFoundError, OSError):
        return None

"""A real full file system for tests: a small tmpfs mounted on a directory (root only),
filled to the last block by a file that can be removed again."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

from testing.needs import need_root


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str = "4m") -> Iterator[Path]:
    """Mount a tmpfs of *size* on *path* (created if missing) for the block; what *path*
    held before is hidden meanwhile, not lost."""
    need_root("mounting a small tmpfs to fill a file system for real")
    path.mkdir(parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o7777
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode={mode:o}", "tmpfs",
                    str(path)], check=True, capture_output=True)
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], check=False)


def fill(directory: Path, name: str = ".filler") -> Path:
    """Write into *directory*/*name* until the file system says ENOSPC; return the file."""
    filler = directory / name
    chunk = b"\0" * (1 << 16)
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        while True:
            try:
                written = os.write(fd, chunk)
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
                if len(chunk) == 1:
                    return filler
                chunk = chunk[: len(chunk) // 16 or 1]  # fill the last partial blocks too
                continue
            if written < len(chunk):
                chunk = chunk[: max(1, len(chunk) // 16)]
    finally:
        os.close(fd)


def free(filler: Path) -> None:
    """Give the space *filler* took back."""
    filler.unlink()


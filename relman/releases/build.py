"""Make an exported tree runnable: shared links, build commands, the release phase."""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

from relman.errors import BuildFailed, ReleasePhaseFailed
from relman.releases.commands import OnLine, run_logged


def link_shared(release_dir: Path, shared_dir: Path, entries: Sequence[str]) -> None:
    """Replace each *entries* path in the release with a link into <root>/shared.

    A directory entry ("media/") is created in shared/ when missing; a missing file entry
    is an error, since the app would otherwise start without its settings.
    """
    for entry in entries:
        name = entry.rstrip("/")
        source = shared_dir / name
        if not source.exists():
            if not entry.endswith("/"):
                raise BuildFailed(f"build.shared: {source} does not exist; create it first")
            source.mkdir(parents=True, mode=0o750)
        dest = release_dir / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.is_symlink() or dest.is_file():
            dest.unlink()
        elif dest.is_dir():
            shutil.rmtree(dest)
        os.symlink(source, dest)


def venv_env(base: Mapping[str, str], venv: Path) -> dict[str, str]:
    """*base* with *venv* activated the way `source bin/activate` does it."""
    env = dict(base)
    env["VIRTUAL_ENV"] = str(venv)
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{base.get('PATH', os.defpath)}"
    env.pop("PYTHONHOME", None)
    return env


async def run_commands(
    commands: Sequence[Sequence[str]],
    *,
    phase: str,
    release_dir: Path,
    env: Mapping[str, str],
    log_path: Path,
    on_line: OnLine | None = None,
) -> None:
    """Run *commands* in order in the release directory; the first failure stops the phase."""
    error = BuildFailed if phase == "build" else ReleasePhaseFailed
    for argv in commands:
        if on_line:
            on_line(f"{phase}: $ {' '.join(argv)}")
        try:
            result = await run_logged(
                argv, cwd=release_dir, env=env, log_path=log_path, on_line=on_line
            )
        except FileNotFoundError:
            raise error(f"{phase}.commands: {argv[0]!r} not found") from None
        if result.returncode != 0:
            raise error(
                f"{phase}.commands: {' '.join(argv)!r} exited {result.returncode}",
                tail=result.tail,
            )

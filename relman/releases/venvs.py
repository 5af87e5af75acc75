"""Virtualenvs keyed by sha256(interpreter + dependency inputs), built in place and shared."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import structlog

from relman.atomic import write_json_atomic
from relman.errors import BuildFailed
from relman.redact import redact_url
from relman.releases import pip_config
from relman.releases.commands import OnLine, clean_env, run_logged

log = structlog.get_logger(__name__)

COMPLETE_MARKER = ".relman-complete"


# An interpreter binary's (path, real path, device, inode, size, mtime, ctime) -> its
# identity. A binary replaced or upgraded in place gets a new inode or ctime, so the daemon
# never serves a stale version from here. What may pick another interpreter each time it runs
# is never cached: a script (a pyenv shim, a wrapper) or a binary not named like an
# interpreter (mise's shims are links to the mise binary, which reads its config).
_IDENTITIES: dict[tuple[object, ...], tuple[str, str]] = {}
_INTERPRETER_NAME = re.compile(r"(python|pypy|graalpy)[0-9.]*t?")


def _binary_key(found: str) -> tuple[object, ...] | None:
    real = os.path.realpath(found)
    if not _INTERPRETER_NAME.fullmatch(os.path.basename(real)):
        return None
    try:
        with open(real, "rb") as f:
            if f.read(4) != b"\x7fELF":
                return None
            st = os.fstat(f.fileno())
    except OSError:
        return None
    return (found, real, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


async def interpreter_identity(python: str) -> tuple[str, str]:
    """(absolute path, version line) of the build interpreter, or BuildFailed."""
    found = shutil.which(python)
    if found is None:
        raise BuildFailed(f"build.python: interpreter {python!r} not found on PATH")
    key = _binary_key(found)
    if key is not None and key in _IDENTITIES:
        return _IDENTITIES[key]
    # -I -S: no site, no user paths; the line is what platform.python_version() and
    # platform.machine() give, without importing platform (half the start-up time).
    proc = await asyncio.create_subprocess_exec(
        found, "-I", "-S", "-c", "import sys,os;print(sys.implementation.name,"
        " sys.version.split()[0], os.uname().machine)",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=clean_env(),
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise BuildFailed(f"build.python: {found} does not run", tail=err.decode(errors="replace"))
    identity = found, out.decode().strip()
    if key is not None:
        _IDENTITIES[key] = identity
    return identity


def deps_hash(interpreter: str, release_dir: Path, requirements: Sequence[str]) -> str:
    """sha256 of the interpreter's version and every dependency input's bytes.

    The installer (build.installer, uv or pip) is not part of it, as uv's version is not:
    both install the same requirements files, and switching to pip to get past a proxy must
    not rebuild the venv of every kept release, nor make a rollback rebuild one. The
    completion record says which installer built a venv (venv_info()).
    """
    h = hashlib.sha256()
    h.update(f"python={interpreter}\n".encode())
    for name in requirements:
        path = release_dir / name
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise BuildFailed(f"build.requirements: {name} not found in the release") from None
        h.update(f"file={name} {len(data)}\n".encode())
        h.update(data)
    return h.hexdigest()


def health_check(venv: Path) -> str | None:
    """Why *venv* cannot be used, or None when it can (pre-commit's python.health_check)."""
    if not (venv / COMPLETE_MARKER).is_file():
        return "never finished building"
    python = venv / "bin" / "python"
    if not python.exists():  # follows the link: a removed base interpreter fails here
        return f"{python} is missing or points at a removed interpreter"
    return None


class VenvBackend(Protocol):
    @property
    def name(self) -> str: ...

    def create(self, python: str, venv: Path) -> list[str]: ...

    def install(self, venv: Path, requirements: Sequence[Path]) -> list[str]: ...


@dataclass(frozen=True, slots=True)
class UvBackend:
    uv: str
    name: str = "uv"
    args: tuple[str, ...] = ()  # for `uv pip install`: pip settings without a uv variable

    def create(self, python: str, venv: Path) -> list[str]:
        return [self.uv, "venv", "--quiet", "--python", python, str(venv)]

    def install(self, venv: Path, requirements: Sequence[Path]) -> list[str]:
        reqs = [arg for r in requirements for arg in ("-r", str(r))]
        return [self.uv, "pip", "install", "--python", str(venv / "bin" / "python"),
                *self.args, *reqs]


@dataclass(frozen=True, slots=True)
class PipBackend:
    name: str = "pip"

    def create(self, python: str, venv: Path) -> list[str]:
        return [python, "-m", "venv", str(venv)]

    def install(self, venv: Path, requirements: Sequence[Path]) -> list[str]:
        reqs = [arg for r in requirements for arg in ("-r", str(r))]
        return [str(venv / "bin" / "pip"), "install", "--disable-pip-version-check", *reqs]


def find_uv() -> str | None:
    """The uv of relman's own venv (uv is a dependency of relman), else one on PATH."""
    try:
        import uv

        return uv.find_uv_bin()
    except (ImportError, FileNotFoundError):
        return shutil.which("uv")


def choose_backend(installer: str = "auto") -> VenvBackend:
    """build.installer: "pip" venv + pip; "uv" uv or BuildFailed; "auto" uv when it is
    installed, else venv + pip."""
    found = find_uv() if installer != "pip" else None
    if found:
        return UvBackend(found)
    if installer == "uv":
        raise BuildFailed('build.installer = "uv" but uv is not installed',
                          hint="install uv into relman's venv (pip install uv), or set "
                          'build.installer = "auto" to fall back to pip')
    return PipBackend()


def carry_pip_config(backend: UvBackend, env: Mapping[str, str], on_line: OnLine | None
                     ) -> tuple[UvBackend, dict[str, str], pip_config.UvSettings]:
    """*backend* and *env* with the machine's pip settings carried over (pip_config)."""
    try:
        settings = pip_config.uv_settings(pip_config.read_pip_options(env), env)
    except pip_config.PipConfigError as e:
        raise BuildFailed(f"pip configuration: {e}", hint="pip refuses it too: fix the file, "
                          'or set build.installer = "pip" to see pip\'s own error') from None
    if settings.carried or settings.overridden:
        log.info("pip_settings.carried", carried=list(settings.carried),
                 overridden=list(settings.overridden), env_keys=sorted(settings.env),
                 indexes=[redact_url(url) for url in settings.indexes()])
    if settings.carried and on_line:
        on_line(pip_config.describe(settings))
    return replace(backend, args=settings.args), {**env, **settings.env}, settings


@dataclass(frozen=True, slots=True)
class VenvResult:
    path: Path
    hash: str
    reused: bool
    backend: str
    seconds: float


async def ensure_venv(
    venvs: Path,
    *,
    interpreter: tuple[str, str],
    release_dir: Path,
    requirements: Sequence[str],
    log_path: Path,
    env: Mapping[str, str],
    on_line: OnLine | None = None,
    backend: VenvBackend | None = None,
    installer: str = "auto",
) -> VenvResult:
    """Reuse the venv for these inputs when it is healthy; else build it in its final place.

    Virtualenvs are not relocatable (pypa/virtualenv #1549), so the build happens at
    venvs/<hash> itself and is marked complete only after a successful install: a crash or a
    failed install leaves a venv that health_check() refuses and the next deploy rebuilds.
    Deploys are serialised by the deploy lock, so no second builder can race this one.
    """
    started = time.monotonic()
    found, version = interpreter
    digest = deps_hash(version, release_dir, requirements)
    venv = venvs / digest[:16]
    problem = health_check(venv)
    if problem is None:
        return VenvResult(venv, digest, True, "cached", time.monotonic() - started)
    backend = backend or choose_backend(installer)
    if venv.exists():
        log.info("venv.discarded", venv=str(venv), reason=problem)
        await asyncio.to_thread(shutil.rmtree, venv)  # thousands of files: not in the loop
    if on_line:
        on_line(f"building virtualenv {venv.name} with {backend.name} ({version})")
    reqs = [release_dir / r for r in requirements]
    carried = None
    if isinstance(backend, UvBackend) and reqs:
        backend, env, carried = carry_pip_config(backend, env, on_line)
    for argv in (backend.create(found, venv), backend.install(venv, reqs) if reqs else None):
        if argv is None:
            continue
        result = await run_logged(
            argv, cwd=release_dir, env=env, log_path=log_path, on_line=on_line
        )
        if result.returncode != 0:
            failed = f"installing dependencies failed ({backend.name} exit {result.returncode})"
            why = pip_config.uv_failure(result.tail, carried) if carried else None
            raise BuildFailed(f"{failed}: {why[0]}" if why else failed,
                              hint=why[1] if why else None, tail=result.tail)
    write_json_atomic(
        venv / COMPLETE_MARKER,
        {"hash": digest, "python": version, "backend": backend.name, "built": time.time()},
    )
    return VenvResult(venv, digest, False, backend.name, time.monotonic() - started)


def venv_info(venv: Path) -> dict[str, object]:
    """The completion record of *venv* ({} if unfinished)."""
    try:
        data = json.loads((venv / COMPLETE_MARKER).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}

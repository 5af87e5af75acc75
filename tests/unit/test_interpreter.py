"""The build interpreter's identity, part of every venv hash: what it says, and when the
daemon may answer it from memory."""

from __future__ import annotations

import asyncio
import os
import platform
import re
import shutil
import sys
from pathlib import Path

import pytest

from relman.errors import BuildFailed
from relman.releases import venvs


def identity(python: str) -> tuple[str, str]:
    return asyncio.run(venvs.interpreter_identity(python))


def test_the_line_is_what_platform_says():
    """The probe skips `import platform` but says the same, so venv hashes do not change."""
    _path, line = identity(sys.executable)
    assert line == f"{sys.implementation.name} {platform.python_version()} {platform.machine()}"


def test_a_binary_is_probed_once(tmp_path: Path):
    link = tmp_path / "python"
    link.symlink_to(os.path.realpath(sys.executable))
    first = identity(str(link))
    key = venvs._binary_key(str(link))
    assert key is not None
    assert venvs._IDENTITIES[key] == first
    assert identity(str(link)) == first


def test_a_replaced_binary_gets_a_new_key(tmp_path: Path):
    """An upgrade writes a new file (new inode, new ctime): never the cached answer."""
    binary = tmp_path / "python3.99"
    shutil.copy2("/bin/true", binary)
    before = venvs._binary_key(str(binary))
    fresh = tmp_path / "python3.99.new"
    shutil.copy2("/bin/true", fresh)
    os.replace(fresh, binary)
    after = venvs._binary_key(str(binary))
    assert before is not None
    assert after is not None
    assert before != after


def test_a_script_is_never_cached(tmp_path: Path):
    """A shim (pyenv) may run another interpreter next time: probe it every time."""
    shim = tmp_path / "python"
    shim.write_text(f"#!/bin/sh\nexec {sys.executable} \"$@\"\n")
    shim.chmod(0o755)
    assert venvs._binary_key(str(shim)) is None
    cached = dict(venvs._IDENTITIES)
    assert identity(str(shim))[1] == identity(sys.executable)[1]
    assert {k: v for k, v in venvs._IDENTITIES.items() if k[0] == str(shim)} == {}
    assert len(venvs._IDENTITIES) <= len(cached) + 1  # at most sys.executable's own


def test_missing_interpreter_names_the_key():
    message = re.escape("build.python: interpreter 'python9.99' not found")
    with pytest.raises(BuildFailed, match=message):
        identity("python9.99")


def test_an_interpreter_that_does_not_run(tmp_path: Path):
    broken = tmp_path / "python"
    broken.write_text("#!/bin/sh\necho broken >&2\nexit 3\n")
    broken.chmod(0o755)
    with pytest.raises(BuildFailed, match="does not run"):
        identity(str(broken))


def test_a_binary_not_named_like_an_interpreter_is_never_cached(tmp_path: Path):
    """mise's shims are links to the mise binary, which picks a version from its config:
    an ELF file whose real name is not python*, pypy* or graalpy* is probed every time."""
    tool = tmp_path / "mise"
    shutil.copy2("/bin/true", tool)
    shim = tmp_path / "python"
    shim.symlink_to(tool)
    assert venvs._binary_key(str(shim)) is None
    real = tmp_path / "real"
    real.mkdir()
    for name in ("python3.11", "python3", "python", "pypy3.10", "python3.13t", "graalpy"):
        binary = real / name
        shutil.copy2("/bin/true", binary)
        assert venvs._binary_key(str(binary)) is not None, name

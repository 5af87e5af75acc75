"""A real relman daemon in a subprocess, driven through the real CLI (tests, bench, demo)."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from testing.waiting import wait_until

RELMAN = [sys.executable, "-m", "relman"]

# The PATH systemd gives a service (systemd.exec(5), merged /usr) comes first, so that the
# daemon finds `python3` (build.python's default) where a deploy user's daemon does: the
# distro's interpreter (Debian 12: /usr/bin/python3, 3.11.2), not a pyenv build first on
# an admin's PATH (and under /root, where a deploy user may not even run it). The rest of
# the caller's PATH follows, for tools installed elsewhere.
SERVICE_PATH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin")


def service_path(path: str | None = None) -> str:
    """SERVICE_PATH, then the directories of *path* (default: $PATH) not in it."""
    rest = (path if path is not None else os.environ.get("PATH", "")).split(os.pathsep)
    return os.pathsep.join([*SERVICE_PATH, *(d for d in rest if d and d not in SERVICE_PATH)])


def make_base_dir(prefix: str = "relman-") -> Path:
    """A temp dir nginx's unprivileged workers can traverse (pytest's tmp dirs are 0700)."""
    base = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    base.chmod(0o755)
    return base


def write_config(path: Path, *, name: str, repo: Path, root: Path, **tables: dict[str, Any]
                 ) -> Path:
    """A relman.toml with [app] (plus any keys in tables["app"]) and any other *tables*."""
    lines = ["[app]", f'name = "{name}"', f'repo = "{repo}"', f'root = "{root}"']
    lines.extend(f"{key} = {toml_value(value)}" for key, value in tables.pop("app", {}).items())
    for table, values in tables.items():
        lines.append(f"\n[{table}]")
        lines.extend(f"{key} = {toml_value(value)}" for key, value in values.items())
    path.write_text("\n".join(lines) + "\n")
    return path


def toml_value(value: Any) -> str:
    """*value* (bool, number, string, list, or dict as an inline table) as TOML."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    return json.dumps(value)  # str, int, float and lists of those are TOML as JSON


def terminate(proc: subprocess.Popen[bytes] | None, timeout: float = 60) -> None:
    """SIGTERM a supervisor this test started and wait for it; SIGKILL it past *timeout*."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


class RelmanDaemon:
    """`relman daemon` for one config file, plus a helper to run CLI commands against it."""

    def __init__(self, config: Path, *, env: dict[str, str] | None = None) -> None:
        self.config = config
        self.env = {**os.environ, "PATH": service_path(), **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = config.with_suffix(".daemon.log")

    def relman(self, *args: str, check: bool = False, timeout: float = 180,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run `relman --config CONFIG ARGS...` and return what it printed."""
        proc = subprocess.run([*RELMAN, "--config", str(self.config), *args],
                              capture_output=True, text=True, timeout=timeout,
                              env={**self.env, **(env or {})}, check=False)
        if check and proc.returncode != 0:
            raise AssertionError(
                f"relman {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
                f"\n--- daemon log ---\n{self.log_tail()}")
        return proc

    def json(self, *args: str) -> Any:
        return json.loads(self.relman("--json", *args, check=True).stdout)

    def init(self) -> None:
        self.relman("init", check=True)

    def start(self, *, env: dict[str, str] | None = None) -> RelmanDaemon:
        """Start the daemon and wait until it answers on its control socket."""
        out = self.log.open("ab")
        self.proc = subprocess.Popen([*RELMAN, "--config", str(self.config), "daemon"],
                                     stdout=out, stderr=subprocess.STDOUT,
                                     env={**self.env, **(env or {})}, start_new_session=True)
        out.close()

        def answers() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited {self.proc.returncode}:\n{self.log_tail()}")
            return self.relman("status", timeout=10).returncode == 0

        wait_until(answers, timeout=30, what="the daemon to answer")
        return self

    def kill9(self) -> None:
        """SIGKILL the daemon only (not the app servers, which run in their own sessions)."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        """SIGTERM: the daemon stops the app servers gracefully, then exits."""
        terminate(self.proc)

    def log_tail(self, n: int = 60) -> str:
        with contextlib.suppress(FileNotFoundError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        return ""

    @contextlib.contextmanager
    def follow(self, *args: str) -> Iterator[Callable[[str], str]]:
        """`relman logs -f ARGS` running; yields wait_for(text): the next line holding
        *text*, waiting up to 20 s for each line."""
        proc = subprocess.Popen([*RELMAN, "--config", str(self.config), "logs", "-f", *args],
                                stdout=subprocess.PIPE, text=True, env=self.env)
        lines: queue.Queue[str] = queue.Queue()
        out = proc.stdout
        assert out is not None
        threading.Thread(target=lambda: [lines.put(x) for x in out], daemon=True).start()

        def wait_for(text: str) -> str:
            while text not in (line := lines.get(timeout=20)):
                pass
            return line

        try:
            yield wait_for
        finally:
            proc.kill()
            proc.wait(10)

    def __enter__(self) -> RelmanDaemon:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

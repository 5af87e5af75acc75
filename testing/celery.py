"""The Celery sample app (testing/apps/celeryapp): a git repo of it, a task queued, a task's
markers waited for.

Celery runs in the release's venv, never in relman's: these helpers drive it through a
python of that venv (or `relman run`), and watch the marker files its task writes under
$CELERYAPP_DATA (see tasks.py). Figures measured on the dev machine (Debian 12, Python
3.11.2, celery 5.7.0, kombu 5.7.0's filesystem broker, polling_interval 0.1 s):
- a worker is "ready" about 1 s after it starts (solo: 0.9-1.0 s; prefork
  --concurrency=1: 1.2 s); queuing a task from a fresh python takes about 0.5 s (import);
- a worker picks a queued task up within about 0.1 s (kombu's default poll is 1 s);
- on SIGTERM to its main process (warm shutdown) it finishes the task it runs and exits 0,
  2.5-3.6 s after the task ended; idle, 5 s (solo) to 7 s (prefork) after the signal. The
  filesystem transport has no event loop support: celery's synchronous loop waits up to
  2 s for a message before it looks at the shutdown flag, then stops its timer thread.
  Give a worker a stop_timeout of its longest task plus 10 s;
- SIGTERM to the whole process group of a prefork worker kills the pool child, and the
  task with it (its done marker never appears); only the main process may get the stop
  signal. The solo pool runs tasks in the main process and has no such child.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

from testing.git import commit, git
from testing.waiting import wait_until

CELERYAPP = Path(__file__).parent / "apps" / "celeryapp"
DATA_ENV = "CELERYAPP_DATA"


def make_celery_repo(path: Path) -> Path:
    """A repo holding the Celery sample app at tag v1 (VERSION says v1)."""
    shutil.copytree(CELERYAPP, path, ignore=shutil.ignore_patterns("__pycache__", "data"))
    git(path, "init", "-q", "-b", "main")
    commit(path, "v1", tag="v1")
    return path


def enqueue_code(name: str, seconds: float) -> str:
    """Python that queues task *name* (sleep *seconds*, then mark it done), run in the
    app's directory by a python of its venv."""
    return (f"from tasks import sleep_then_mark; "
            f"sleep_then_mark.delay({name!r}, {float(seconds)!r})")


def enqueue(python: Path | str, app_dir: Path, data: Path, name: str, seconds: float,
            env: dict[str, str] | None = None) -> None:
    """Queue task *name* with *python* (of a venv with celery) in *app_dir*."""
    run_python(python, app_dir, data, enqueue_code(name, seconds), env=env)


def run_python(python: Path | str, app_dir: Path, data: Path, code: str,
               env: dict[str, str] | None = None) -> str:
    """Run *code* with *python* in *app_dir*, with $CELERYAPP_DATA = *data*; its stdout."""
    full_env = {**os.environ, **(env or {}), DATA_ENV: str(data)}
    full_env.pop("VIRTUAL_ENV", None)
    return subprocess.run([str(python), "-c", code], cwd=app_dir, env=full_env, check=True,
                          capture_output=True, text=True, timeout=60).stdout


def marker(data: Path, kind: str, name: str) -> str | None:
    """"<release> <pid>" from *kind*/NAME (kind: started or done), None before it is written."""
    try:
        return (data / kind / name).read_text().strip()
    except FileNotFoundError:
        return None


def wait_marker(data: Path, kind: str, name: str, timeout: float = 30) -> str:
    """Wait for *kind*/NAME; return "<release> <pid>"."""
    return wait_until(lambda: marker(data, kind, name), timeout=timeout,
                      what=f"celery task {name} {kind}")


def ticks(data: Path) -> list[str]:
    """The ticks beat has had run so far ("tick-<unix time>"), oldest first."""
    return sorted(p.name for p in (data / "ticks").glob("tick-*"))


def tick_senders(data: Path) -> list[int]:
    """The pid of the beat that sent each tick run so far, oldest first (ticks run in the
    order they were sent: the filesystem broker hands its messages out by name, which starts
    with the sender's monotonic clock)."""
    senders = []
    for name in ticks(data):
        origin = (data / "ticks" / name).read_text().split()[-1]  # gen<pid>@<host>
        senders.append(int(origin.partition("@")[0].removeprefix("gen")))
    return senders


def worker_command(*extra: str) -> list[str]:
    """[processes.worker] command: the release's `celery` (its venv is first on PATH), one
    task at a time in its main process."""
    return ["celery", "-A", "tasks", "worker", "--pool=solo", "--loglevel=INFO", *extra]


def beat_command(*extra: str) -> list[str]:
    """[processes.beat] command."""
    return ["celery", "-A", "tasks", "beat", "--loglevel=INFO", *extra]


@dataclass(frozen=True, slots=True)
class CeleryProcess:
    pid: int
    kind: str  # "worker" or "beat"
    release: str  # the release directory it runs in


def celery_processes(releases: Path) -> frozenset[CeleryProcess]:
    """The Celery workers and beats running in a release directory under *releases*; not
    their children (a fork not yet exec'd has its parent's command line and directory:
    Python's platform module runs `uname`, for one)."""
    found: dict[int, tuple[int, CeleryProcess]] = {}
    for proc in psutil.process_iter():
        try:
            cmdline = proc.cmdline()
            if not any(Path(arg).name == "celery" for arg in cmdline[:2]):
                continue
            kind = next((k for k in ("worker", "beat") if k in cmdline), None)
            cwd = Path(proc.cwd())
            if (kind is None or cwd.parent != releases.resolve()
                    or proc.status() == psutil.STATUS_ZOMBIE):
                continue
            found[proc.pid] = (proc.ppid(), CeleryProcess(proc.pid, kind, cwd.name))
        except psutil.Error:
            continue
    return frozenset(p for ppid, p in found.values() if ppid not in found)


class CeleryWatch:
    """celery_processes(*releases*) sampled every few milliseconds in a thread, from `with`
    to its end: *samples* holds each different set seen, in order, with when it was first
    seen (time.time()). With *log_dir* and *texts*, *first_seen* maps (release, process,
    text) to when each text was first seen in log/<release>.<process>.log."""

    def __init__(self, releases: Path, log_dir: Path | None = None, texts: Sequence[str] = (),
                 interval: float = 0.02) -> None:
        self.releases = releases
        self.log_dir = log_dir
        self.texts = tuple(texts)
        self.interval = interval
        self.samples: list[tuple[float, frozenset[CeleryProcess]]] = []
        self.first_seen: dict[tuple[str, str, str], float] = {}
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> CeleryWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._done.is_set():
            now = time.time()
            seen = celery_processes(self.releases)
            if not self.samples or self.samples[-1][1] != seen:
                self.samples.append((now, seen))
            if self.log_dir is not None and self.texts:
                self._read_logs(self.log_dir, now)
            self._done.wait(self.interval)

    def _read_logs(self, log_dir: Path, now: float) -> None:
        for path in log_dir.glob("*.*.log"):
            release, _, process = path.name.removesuffix(".log").partition(".")
            wanted = [t for t in self.texts if (release, process, t) not in self.first_seen]
            if not wanted:
                continue
            text = path.read_text(errors="replace")
            for found in wanted:
                if found in text:
                    self.first_seen[release, process, found] = now

    def most(self, kind: str) -> int:
        """The most processes of *kind* seen at once."""
        return max((len([p for p in seen if p.kind == kind]) for _t, seen in self.samples),
                   default=0)

    def releases_at_once(self, kind: str | None = None) -> set[frozenset[str]]:
        """Each set of releases whose processes (of *kind*, if given) were seen at once."""
        return {frozenset(p.release for p in seen if kind in (None, p.kind))
                for _t, seen in self.samples}


def worker_argv(venv: Path, *extra: str) -> Sequence[str]:
    """`celery -A tasks worker` of *venv*: one task at a time, in its main process."""
    return [str(venv / "bin" / "celery"), "-A", "tasks", "worker", "--pool=solo",
            "--loglevel=INFO", *extra]

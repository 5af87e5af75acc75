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
from collections.abc import Sequence
from pathlib import Path

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


def worker_argv(venv: Path, *extra: str) -> Sequence[str]:
    """`celery -A tasks worker` of *venv*: one task at a time, in its main process."""
    return [str(venv / "bin" / "celery"), "-A", "tasks", "worker", "--pool=solo",
            "--loglevel=INFO", *extra]

"""The sample app as process tracking is tested with (setproctitle renames gunicorn's
processes and overwrites their environment; a helper double-forks into its own session),
and what runs in an app root, found without asking relman."""

from __future__ import annotations

import contextlib
from pathlib import Path

import psutil

TRACKED = {"requirements.txt": "gunicorn==27.0.1\npyuwsgi==2.0.30.post1\n"
                               "setproctitle==1.3.8\n",
           "HELPER": ""}


def app_procs(root: Path) -> list[psutil.Process]:
    """Every live process whose working directory is in *root* (servers, workers, helpers,
    build steps)."""
    found = []
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if proc.cwd().startswith(str(root) + "/") and \
                    proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
    return found


def _where(root: Path, test) -> list[psutil.Process]:
    found = []
    for proc in app_procs(root):
        with contextlib.suppress(psutil.Error):
            if test(proc.cmdline()):
                found.append(proc)
    return found


def masters(root: Path) -> list[psutil.Process]:
    """gunicorn masters in *root*, by the title setproctitle gave them."""
    return _where(root, lambda argv: "gunicorn: master" in " ".join(argv))


def helpers(root: Path) -> list[psutil.Process]:
    return _where(root, lambda argv: "relman-test-helper" in argv)


def orphans(root: Path, servers: list[dict]) -> list[psutil.Process]:
    """Processes in *root* that belong to none of *servers* (`relman status`'s list): not a
    server, not one of its descendants, not a helper of one of its instances."""
    known: set[int] = set()
    instances = {s["instance"] for s in servers}
    for server in servers:
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(server["pid"])
            known |= {proc.pid, *(c.pid for c in proc.children(recursive=True))}
    lost = []
    for proc in app_procs(root):
        with contextlib.suppress(psutil.Error):
            if proc.pid in known or proc.environ().get("RELMAN_UNIT") in instances:
                continue
            lost.append(proc)
    return lost

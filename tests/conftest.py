"""Fixtures: real git repos, real daemons, real app servers; cleaned up by identity."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from testing.celery import make_celery_repo
from testing.daemon import RelmanDaemon, make_base_dir, write_config
from testing.git import make_app_repo
from testing.leftovers import kill_leftover_servers
from testing.stack import nginx_user_and_group, start_nginx

# One uv cache for every test and run: the sample app's venv is built from it in well under a
# second, so each test can have its own app root without paying for downloads.
os.environ.setdefault("UV_CACHE_DIR", str(Path.home() / ".cache" / "relman-tests-uv"))
os.environ.setdefault("UV_PYTHON_DOWNLOADS", "never")


@pytest.fixture
def base_dir() -> Iterator[Path]:
    path = make_base_dir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def app_repo(base_dir: Path) -> Path:
    return make_app_repo(base_dir / "repo")


@pytest.fixture
def celery_repo(base_dir: Path) -> Path:
    """A repo of the Celery sample app (testing/apps/celeryapp) at tag v1."""
    return make_celery_repo(base_dir / "celery-repo")


AppFactory = Callable[..., RelmanDaemon]


@pytest.fixture
def make_app(base_dir: Path, app_repo: Path) -> Iterator[AppFactory]:
    """make_app(**tables) -> an initialised RelmanDaemon (started unless start=False) for
    the sample app, or the app in *repo* (celery_repo: the Celery sample app)."""
    made: list[RelmanDaemon] = []

    def factory(name: str = "sample", start: bool = True, repo: Path | None = None,
                **tables: dict[str, Any]) -> RelmanDaemon:
        tables.setdefault("server", {"kind": "gunicorn", "app": "app:server"})
        tables.setdefault("health", {"path": "/health", "timeout": 30})
        config = write_config(base_dir / f"{name}.toml", name=name, repo=repo or app_repo,
                              root=base_dir / name, **tables)
        daemon = RelmanDaemon(config)
        made.append(daemon)
        daemon.init()
        if start:
            daemon.start()
        return daemon

    yield factory
    for daemon in made:
        daemon.stop()
        kill_leftover_servers(base_dir / daemon.config.stem)
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if proc.cwd().startswith(str(base_dir)):
                proc.kill()


STACKS = {
    "gunicorn": ({"kind": "gunicorn", "app": "app:server", "workers": 2}, "http"),
    "uwsgi": ({"kind": "uwsgi", "wsgi_file": "wsgi.py", "protocol": "uwsgi", "workers": 2},
              "uwsgi"),
}


@pytest.fixture
def stack(make_app, base_dir):
    """make(kind, **tables) -> (app, nginx): the sample app behind a private nginx whose
    workers run as www-data when the tests run as root."""
    started = []

    def make(kind: str, server_extra: dict | None = None, **tables: Any):
        server, protocol = STACKS[kind]
        _user, group = nginx_user_and_group()
        server = {**server, "socket_group": group, **(server_extra or {})}
        nginx = start_nginx(base_dir, name="sample", root=base_dir / "sample",
                            protocol=protocol)
        started.append(nginx)
        health = {"path": "/health", "timeout": 30, "nginx_url": f"{nginx.url}/health"}
        app = make_app(server=server, health=health, **tables)
        return app, nginx

    yield make
    for nginx in started:
        nginx.stop()


@pytest.fixture(scope="session")
def fleet() -> Iterator[Any]:
    """fleet(n) -> testing.fleet.Fleet: n simulated hosts (a unix user, app root, daemon
    each) behind one private sshd and a front nginx; made once, kept for the session."""
    from testing.fleet import simulated_fleet  # root only; most sessions never need it
    from testing.needs import need_root

    need_root("a simulated host is a unix user")
    with simulated_fleet() as sim:
        yield sim


@pytest.fixture
def settled_fleet(fleet: Any) -> Iterator[Any]:
    """fleet(3) with every host live on one release and nothing prepared; afterwards every
    host's daemon must still run, with no candidate prepared and its config as it was (the
    hosts are the session's: the next fleet test finds them so)."""
    from testing.fleet_cli import check_left_alone, settle

    f = fleet(3)
    configs = settle(f)
    yield f
    check_left_alone(f, configs)

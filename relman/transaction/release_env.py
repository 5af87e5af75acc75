"""The environment and working directory a release's programs run with: its servers, its
processes ([processes.NAME]) and `relman run`'s one-off commands.

The venv comes first on PATH, then server.env and the env file in shared/ apply, then the
RELMAN_* variables that name the release. relman's tracking tags are never carried over
from the base environment: a process holding them would be taken by a daemon for a stray
instance of its own (DESIGN section 6) and stopped.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Final

from relman.config import Config, ServerConfig
from relman.envfile import read_env_file
from relman.releases import Manifest
from relman.releases.commands import clean_env
from relman.releases.layout import AppRoot

# What relman itself puts in an environment to recognise its own processes: the tracking
# tags (the supervisor's, older daemons' RELMAN_INSTANCE among them) and a job's marker.
TRACKING_TAGS: Final = frozenset({"RELMAN_APP", "RELMAN_ROOT", "RELMAN_UNIT",
                                  "RELMAN_INSTANCE", "RELMAN_JOB", "RELMAN_SOCKET"})

# The PATH systemd gives a service (systemd.exec(5)): what the daemon's servers have.
SERVICE_PATH: Final = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# What `relman run` keeps of the invoking shell: who and where the user is, the locale and
# the terminal (an interactive `manage.py shell` needs TERM). The rest of an admin's shell
# (PYTHONPATH, an activated venv, aliases of tools) would make a one-off command run
# differently from the servers.
LOGIN_KEPT: Final = ("HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TERM",
                     "COLORTERM", "NO_COLOR")


def release_cwd(root: AppRoot, manifest: Manifest) -> Path:
    """The release's directory, resolved (a program never sees a path that a later
    deploy re-points, such as current/)."""
    return root.release_dir(manifest.id).resolve()


def release_env(config: Config, root: AppRoot, manifest: Manifest, base_env: Mapping[str, str],
                *, process: str, server: ServerConfig | None = None) -> dict[str, str]:
    """*base_env* without relman's tracking tags, with *manifest*'s venv first on PATH
    (VIRTUAL_ENV set), the env and env_file of *server* (default: the config's [server]),
    RELMAN_RELEASE and RELMAN_PROCESS=*process*.

    Raises ConfigError when the env file cannot be read.
    """
    server = config.server if server is None else server
    env = {k: v for k, v in base_env.items() if k not in TRACKING_TAGS}
    env.update(server.env)
    if server.env_file:
        env.update(read_env_file(root.shared / server.env_file))
    return with_release(env, manifest, process=process)


def with_release(env: Mapping[str, str], manifest: Manifest, *, process: str
                 ) -> dict[str, str]:
    """*env* with *manifest*'s venv first on PATH (VIRTUAL_ENV set), RELMAN_RELEASE and
    RELMAN_PROCESS=*process*: what every program of a release gets."""
    venv = Path(manifest.venv)
    return {**env, "VIRTUAL_ENV": str(venv),
            "PATH": os.pathsep.join(_path_dirs(str(venv / "bin"), env.get("PATH", os.defpath))),
            "RELMAN_RELEASE": manifest.id, "RELMAN_PROCESS": process}


def login_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The base environment of `relman run`: the daemon's clean environment as systemd
    gives it to a service (its PATH), with the user's login variables, locale and terminal
    from *environ*."""
    kept = {k: v for k, v in environ.items() if k in LOGIN_KEPT or k.startswith("LC_")}
    return clean_env({**kept, "PATH": SERVICE_PATH})


def _path_dirs(first: str, rest: str) -> Iterable[str]:
    yield first
    yield from (d for d in rest.split(os.pathsep) if d and d != first)

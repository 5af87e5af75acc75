"""server_spec(): how one instance of a release's server is started (argv, cwd, env,
socket, pidfile, log), from the config and the release's manifest."""

from __future__ import annotations

import os
from pathlib import Path

from relman.config import Config
from relman.releases import Manifest
from relman.releases.layout import AppRoot
from relman.supervisor import ServerSpec
from relman.supervisor.kinds import server_argv


def server_spec(config: Config, root: AppRoot, manifest: Manifest, env: dict[str, str],
                instance: str) -> ServerSpec:
    """The spec of *instance* of *manifest*'s server, at its resolved path, with the app's
    *env* and the release's venv first on PATH."""
    release_dir = root.release_dir(manifest.id).resolve()
    venv = Path(manifest.venv)
    socket = root.socket(instance)
    env = {**env, "VIRTUAL_ENV": str(venv),
           "PATH": f"{venv / 'bin'}{os.pathsep}{env.get('PATH', os.defpath)}",
           "RELMAN_RELEASE": manifest.id, "RELMAN_SOCKET": str(socket)}
    argv = server_argv(config.server, venv=venv, release_dir=release_dir, root=root.root,
                       socket=socket, stop_timeout=config.swap.stop_timeout)
    return ServerSpec(instance=instance, release=manifest.id, argv=tuple(argv),
                      cwd=release_dir, env=env, socket=socket, pidfile=root.pidfile(instance),
                      log=root.server_log(manifest.id), protocol=config.server.protocol,
                      socket_mode=config.server.socket_mode,
                      socket_group=config.server.socket_group)

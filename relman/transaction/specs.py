"""How one instance is started (argv, cwd, env, socket, pidfile, log): the web server's
(server_spec) and a process type's (process_spec), from a release's settings and manifest."""

from __future__ import annotations

from pathlib import Path

from relman.config import ProcessConfig, ServerConfig
from relman.releases import Manifest
from relman.releases.layout import AppRoot
from relman.supervisor import ServerSpec
from relman.supervisor.kinds import server_argv
from relman.transaction.release_env import release_cwd, with_release

WEB = "web"


def release_process_env(root: AppRoot, manifest: Manifest, env: dict[str, str], *,
                        process: str, index: int) -> dict[str, str]:
    """*env* with the release's venv first on PATH and the RELMAN_* variables every
    instance gets (DESIGN section 8)."""
    return {**with_release(env, manifest, process=process), "RELMAN_INSTANCE": str(index)}


def server_spec(server: ServerConfig, stop_timeout: float, root: AppRoot, manifest: Manifest,
                env: dict[str, str], instance: str) -> ServerSpec:
    """The spec of *instance* of *manifest*'s web server, at its resolved path, with the
    app's *env* and the release's venv first on PATH."""
    release_dir = release_cwd(root, manifest)
    socket = root.socket(instance)
    env = {**release_process_env(root, manifest, env, process=WEB, index=1),
           "RELMAN_SOCKET": str(socket)}
    argv = server_argv(server, venv=Path(manifest.venv), release_dir=release_dir,
                       root=root.root, socket=socket, stop_timeout=stop_timeout)
    return ServerSpec(instance=instance, release=manifest.id, argv=tuple(argv),
                      cwd=release_dir, env=env, socket=socket, pidfile=root.pidfile(instance),
                      log=root.server_log(manifest.id), protocol=server.protocol,
                      socket_mode=server.socket_mode, socket_group=server.socket_group)


def process_spec(process: ProcessConfig, root: AppRoot, manifest: Manifest,
                 env: dict[str, str], *, name: str, index: int, instance: str) -> ServerSpec:
    """The spec of instance *index* of process type *name* of *manifest*: its command with
    {release} and {root} filled in, in the release directory, no socket."""
    release_dir = release_cwd(root, manifest)
    values = {"release": str(release_dir), "root": str(root.root)}
    argv = tuple(part.format_map(values) for part in process.command)
    return ServerSpec(instance=instance, release=manifest.id, argv=argv, cwd=release_dir,
                      env=release_process_env(root, manifest, env, process=name, index=index),
                      socket=None, pidfile=root.pidfile(instance),
                      log=root.process_log(manifest.id, name), process=name, index=index,
                      stop_signal=process.signal)

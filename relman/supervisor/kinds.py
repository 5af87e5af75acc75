"""Server kinds: the command line that runs a release's app server on its own socket."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final, Protocol

from relman.atomic import current_umask
from relman.config import ServerConfig

# uWSGI's SIGTERM (and --die-on-term) kills workers mid-request (measured, ANCHORS.md);
# this hook makes SIGTERM a graceful stop that lets in-flight requests finish.
UWSGI_GRACEFUL_TERM: Final = "unix_signal:15 gracefully_kill_them_all"

# gunicorn 25.1 and later bind a control socket by default, at $XDG_RUNTIME_DIR/gunicorn.ctl
# or ~/.gunicorn/gunicorn.ctl: one path for every instance of every app of a user. Each new
# arbiter unlinks the path and binds its own there, and the first to stop unlinks the next
# one's (gunicorn 27.0.1, gunicorn/ctl/server.py ControlSocketServer._serve and stop). relman
# is the control plane (gunicornc could change the workers behind its back), so relman turns
# it off, unless server.args already says what to do with it. Older gunicorn refuses the
# flag, so it goes only to a venv whose installed gunicorn knows it.
GUNICORN_CONTROL_SOCKET_SINCE: Final = (25, 1)
GUNICORN_CONTROL_SOCKET_ARGS: Final = ("--control-socket", "--no-control-socket")


def socket_umask(mode: int, inherited: int | None = None) -> int:
    """The umask an app server starts with, so that its socket is never wider than *mode*
    between its bind and relman's chmod (which waits for the health check).

    connect(2) on a unix socket needs write permission only. A class of users (group,
    others) that *mode* gives nothing gets nothing; one it gives some access loses only the
    read and write bits *mode* denies, so directories the app makes stay traversable. The
    rest is the daemon's own umask (*inherited*, read from the process when None).
    """
    mask = current_umask() if inherited is None else inherited
    for shift in (3, 0):  # group, others; the owner always has rw (config checks it)
        granted = (mode >> shift) & 0o7
        mask |= (0o7 if not granted else 0o6 & ~granted) << shift
    return mask & 0o777


class ServerKind(Protocol):
    def argv(self, server: ServerConfig, *, venv: Path, release_dir: Path, root: Path,
             socket: Path, stop_timeout: float) -> list[str]: ...


def installed_version(venv: Path, name: str) -> tuple[int, ...] | None:
    """The version of distribution *name* installed in *venv* (its dist-info, read without
    running anything), as a tuple of its leading numbers; None when it is not there.

    Read by hand, as the Version header of its METADATA, rather than with
    importlib.metadata, which brings the email package, zipfile and csv into the daemon for
    its whole life (2 MiB of its idle RSS, issue 11)."""
    wanted = _normalized(name)
    for site in sorted(venv.glob("lib/python*/site-packages")):
        for info in sorted(site.glob("*.dist-info")):
            if _normalized(info.name.partition("-")[0]) != wanted:
                continue
            version = _metadata_version(info / "METADATA")
            if version is not None:
                numbers = re.findall(r"^\d+|(?<=\.)\d+", version.split("+")[0])
                return tuple(int(n) for n in numbers)
    return None


def _normalized(name: str) -> str:
    """A distribution name as the packaging specs compare them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _metadata_version(path: Path) -> str | None:
    """The Version header of a core metadata file (its headers end at the first blank
    line); None when the file or the header is missing."""
    try:
        with path.open(encoding="utf-8", errors="replace") as lines:
            for line in lines:
                if not line.strip():
                    break
                key, _, value = line.partition(":")
                if key.strip().lower() == "version":
                    return value.strip()
    except OSError:
        return None
    return None


def gunicorn_control_socket_args(server: ServerConfig, venv: Path) -> list[str]:
    """`--no-control-socket` when *venv*'s gunicorn binds a control socket by default and
    server.args does not set one; else nothing."""
    if any(a.split("=", 1)[0] in GUNICORN_CONTROL_SOCKET_ARGS for a in server.args):
        return []
    version = installed_version(venv, "gunicorn")
    if version is None or version < GUNICORN_CONTROL_SOCKET_SINCE:
        return []
    return ["--no-control-socket"]


class Gunicorn:
    def argv(self, server: ServerConfig, *, venv: Path, release_dir: Path, root: Path,
             socket: Path, stop_timeout: float) -> list[str]:
        return [
            str(venv / "bin" / "gunicorn"),
            "--bind", f"unix:{socket}",
            "--workers", str(server.workers),
            "--chdir", str(release_dir),
            "--graceful-timeout", str(int(stop_timeout)),
            # gunicorn binds under its own umask (default 0: a 0777 socket), not the process's
            "--umask", f"{0o777 & ~server.socket_mode:#o}",
            *gunicorn_control_socket_args(server, venv),
            *server.args,
            server.app,
        ]


class Uwsgi:
    def argv(self, server: ServerConfig, *, venv: Path, release_dir: Path, root: Path,
             socket: Path, stop_timeout: float) -> list[str]:
        bind = "--http-socket" if server.protocol == "http" else "--socket"
        target = ["--module", server.app] if server.app else ["--wsgi-file", server.wsgi_file]
        return [
            str(venv / "bin" / "uwsgi"),
            "--master",
            "--processes", str(server.workers),
            bind, str(socket),
            "--chdir", str(release_dir),
            *target,
            "--need-app",  # exit instead of serving 500s when the app fails to import
            "--hook-master-start", UWSGI_GRACEFUL_TERM,
            "--worker-reload-mercy", str(int(stop_timeout)),
            "--vacuum",
            *server.args,
        ]


class Command:
    def argv(self, server: ServerConfig, *, venv: Path, release_dir: Path, root: Path,
             socket: Path, stop_timeout: float) -> list[str]:
        values = {"socket": str(socket), "release": str(release_dir), "root": str(root)}
        return [part.format_map(values) for part in server.command] + list(server.args)


KINDS: Final[dict[str, ServerKind]] = {"gunicorn": Gunicorn(), "uwsgi": Uwsgi(),
                                        "command": Command()}


def server_argv(server: ServerConfig, *, venv: Path, release_dir: Path, root: Path,
                socket: Path, stop_timeout: float) -> list[str]:
    """The argv for *server.kind*; config validation guarantees the kind exists."""
    return KINDS[server.kind].argv(server, venv=venv, release_dir=release_dir, root=root,
                                   socket=socket, stop_timeout=stop_timeout)

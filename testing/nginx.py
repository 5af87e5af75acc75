"""A real nginx master of our own, on a free loopback port, for tests, bench and the demo.

PrivateNginx writes its own nginx.conf under a fresh prefix directory (pid file, logs, every
temp path), runs `nginx -p PREFIX -c CONF` with `daemon off;` in a session of its own, and
stops it by signalling the pid it started, never by name. When the tests run as root the
workers run as www-data, as on a real server: that is what catches a socket or directory
the web server user cannot reach.

The server blocks are usually rendered for the port PrivateNginx picked, so they can be
given as a callable taking the listen value (`127.0.0.1:PORT`):

    with PrivateNginx(base, lambda listen: render_server_block(..., listen=listen)) as nginx:
        urllib.request.urlopen(nginx.url)
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

import psutil

from testing.ports import free_port
from testing.waiting import wait_until

ServerBlocks = str | Callable[[str], str]

# Workers drop to this user when the master starts as root (the "user" directive is
# ignored, with a warning, otherwise).
DEFAULT_USER: str | None = "www-data" if os.geteuid() == 0 else None

_TEMP_PATHS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")

# nginx's stock uwsgi_params, for an install that lacks the file next to its nginx.conf.
_UWSGI_PARAMS = """\
uwsgi_param  QUERY_STRING       $query_string;
uwsgi_param  REQUEST_METHOD     $request_method;
uwsgi_param  CONTENT_TYPE       $content_type;
uwsgi_param  CONTENT_LENGTH     $content_length;
uwsgi_param  REQUEST_URI        $request_uri;
uwsgi_param  PATH_INFO          $document_uri;
uwsgi_param  DOCUMENT_ROOT      $document_root;
uwsgi_param  SERVER_PROTOCOL    $server_protocol;
uwsgi_param  REQUEST_SCHEME     $scheme;
uwsgi_param  HTTPS              $https if_not_empty;
uwsgi_param  REMOTE_ADDR        $remote_addr;
uwsgi_param  REMOTE_PORT        $remote_port;
uwsgi_param  SERVER_PORT        $server_port;
uwsgi_param  SERVER_NAME        $server_name;
"""


class NginxError(RuntimeError):
    """The private nginx failed to start, reload or pass `nginx -t`; the message has its log."""


def nginx_binary() -> str | None:
    """Return the nginx executable on PATH, else /usr/sbin/nginx, else None."""
    found = shutil.which("nginx")
    if found:
        return found
    if os.access("/usr/sbin/nginx", os.X_OK):
        return "/usr/sbin/nginx"
    return None


def require_nginx() -> str:
    """Return the nginx executable; skip the test without one, but fail on CI (CI=true)."""
    binary = nginx_binary()
    if binary is not None:
        return binary
    reason = "nginx is not installed (not on PATH, no /usr/sbin/nginx)"
    if os.environ.get("CI") == "true":
        raise NginxError(f"{reason}; CI must install it (apt-get install nginx-light)")
    import pytest  # here, not at the top: the demo uses this module without pytest

    pytest.skip(reason)


def _system_uwsgi_params(binary: str) -> str:
    """The installed uwsgi_params (next to the --conf-path nginx was built with), or stock."""
    out = subprocess.run([binary, "-V"], capture_output=True, text=True, check=False).stderr
    match = re.search(r"--conf-path=(\S+)", out)
    candidate = Path(match[1]).parent / "uwsgi_params" if match else None
    if candidate is not None and candidate.is_file():
        return candidate.read_text(encoding="utf-8")
    return _UWSGI_PARAMS


def _traverse_denied(path: Path, user: str) -> Path | None:
    """The first directory on the way to *path* that *user* may not search, if any."""
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        raise NginxError(f"user {user!r} does not exist; pass user=None to keep root") from None
    gids = set(os.getgrouplist(user, pw.pw_gid))
    for directory in [*reversed(path.parents), path]:
        st = directory.stat()
        if st.st_uid == pw.pw_uid:
            bit = stat.S_IXUSR
        elif st.st_gid in gids:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            return directory
    return None


class PrivateNginx:
    """nginx on 127.0.0.1:<free port> with its own prefix, config, logs and temp paths."""

    def __init__(
        self,
        base: Path,
        server_blocks: ServerBlocks,
        *,
        user: str | None = DEFAULT_USER,
        binary: str | None = None,
        timeout: float = 10,
    ) -> None:
        self.binary = binary or require_nginx()
        self.user = user
        self.timeout = timeout
        self.prefix = Path(tempfile.mkdtemp(prefix="nginx-", dir=base))
        # mkdtemp makes 0700; the workers (www-data) need to reach prefix/temp/*.
        self.prefix.chmod(0o755)
        for sub in ("conf", "logs", "temp"):
            (self.prefix / sub).mkdir(mode=0o755)
        (self.prefix / "conf" / "uwsgi_params").write_text(_system_uwsgi_params(self.binary))
        self.port = free_port()
        self._blocks = server_blocks
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def listen(self) -> str:
        """The value for a server block's `listen` directive."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """The master's pid while it runs."""
        return self._proc.pid if self._proc is not None else None

    @property
    def error_log(self) -> Path:
        return self.prefix / "logs" / "error.log"

    @property
    def access_log(self) -> Path:
        return self.prefix / "logs" / "access.log"

    def error_log_tail(self, n: int = 20) -> str:
        """The last *n* lines of the error log (startup errors and nginx's stderr land there)."""
        try:
            lines = self.error_log.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return ""
        return "\n".join(lines[-n:])

    def _main_conf(self, servers: Path) -> str:
        p = self.prefix
        user = f"user {self.user};\n" if self.user else ""
        temp = "".join(f"    {kind}_temp_path {p}/temp/{kind};\n" for kind in _TEMP_PATHS)
        return (
            f"# Written by testing.nginx.PrivateNginx.\n{user}"
            f"daemon off;\nworker_processes 1;\npid {p}/nginx.pid;\nlock_file {p}/nginx.lock;\n"
            f"error_log {p}/logs/error.log notice;\n\n"
            "events {\n    worker_connections 256;\n}\n\n"
            "http {\n"
            "    log_format relman '$remote_addr \"$request\" $status upstream=$upstream_addr';\n"
            f"    access_log {p}/logs/access.log relman;\n{temp}"
            f"    include {servers};\n"
            "}\n"
        )

    def _render(self, blocks: ServerBlocks) -> str:
        return blocks(self.listen) if callable(blocks) else blocks

    def _write_conf(self, stem: str, servers_text: str) -> Path:
        conf_dir = self.prefix / "conf"
        servers = conf_dir / f"{stem}-servers.conf"
        servers.write_text(servers_text)
        conf = conf_dir / f"{stem}.conf"
        conf.write_text(self._main_conf(servers))
        return conf

    def _argv(self, conf: Path, error_log: str) -> list[str]:
        # -e: where nginx logs before it has read error_log from the config.
        return [self.binary, "-p", f"{self.prefix}/", "-c", str(conf), "-e", error_log]

    def check_config(self, server_blocks: ServerBlocks) -> str:
        """Run `nginx -t` on a config holding *server_blocks*; return its output or raise."""
        conf = self._write_conf("check", self._render(server_blocks))
        # -e stderr: the verdict and any [emerg] come back to us, not into the server's log.
        argv = [*self._argv(conf, "stderr"), "-t"]
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise NginxError(f"nginx -t failed ({done.returncode}):\n{done.stderr}")
        return done.stderr

    def start(self) -> None:
        """Start the master and return once its worker runs and the port accepts."""
        if self._proc is not None:
            raise NginxError("nginx is already running")
        if self.user is not None:
            denied = _traverse_denied(self.prefix / "temp", self.user)
            if denied is not None:
                raise NginxError(
                    f"{self.user} cannot search {denied} (mode {denied.stat().st_mode:o}); "
                    "nginx workers run as that user. Use a base dir such as "
                    "tempfile.mkdtemp(dir='/tmp') chmod 0o755 (pytest's tmp_path is 0700)."
                )
        for _attempt in range(3):
            conf = self._write_conf("nginx", self._render(self._blocks))
            with self.error_log.open("ab") as log:
                self._proc = subprocess.Popen(
                    self._argv(conf, str(self.error_log)),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            try:
                wait_until(self._ready, self.timeout, what=f"nginx to serve {self.listen}")
            except BaseException as exc:
                tail = self.error_log_tail()
                self.stop()
                # free_port() cannot reserve the port: if something took it meanwhile and
                # the blocks are rendered per port, try another one.
                taken = isinstance(exc, NginxError) and "Address already in use" in tail
                if taken and callable(self._blocks):
                    self.port = free_port()
                    continue
                if isinstance(exc, TimeoutError):
                    raise NginxError(f"{exc}; error log:\n{tail}") from exc
                raise
            return
        raise NginxError(f"no free port after 3 attempts; error log:\n{self.error_log_tail()}")

    def _running(self) -> subprocess.Popen[bytes]:
        proc = self._proc
        if proc is None:
            raise NginxError("nginx is not running")
        code = proc.poll()
        if code is not None:
            raise NginxError(f"nginx exited with {code}; error log:\n{self.error_log_tail()}")
        return proc

    def _workers(self) -> set[int]:
        """Pids of the master's live worker processes (zombies not yet reaped excluded)."""
        proc = self._running()
        pids = set()
        for child in psutil.Process(proc.pid).children():
            try:
                if child.status() != psutil.STATUS_ZOMBIE:
                    pids.add(child.pid)
            except psutil.NoSuchProcess:
                continue
        return pids

    def _ready(self) -> bool:
        # Workers are forked only after the config loaded and every listen socket was
        # bound, so a worker means the port is nginx's and not some other process's.
        if not self._workers():
            return False
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    def reload(self, server_blocks: ServerBlocks) -> None:
        """Check, install and apply new server blocks (SIGHUP); return once old workers left.

        Old workers finish their in-flight requests first, so this waits for those too,
        bounded by the timeout given to the constructor.
        """
        proc = self._running()
        text = self._render(server_blocks)
        self.check_config(text)
        servers = self.prefix / "conf" / "nginx-servers.conf"
        previous = servers.read_text()
        old = self._workers()
        offset = self.error_log.stat().st_size
        servers.write_text(text)
        proc.send_signal(signal.SIGHUP)

        def applied() -> bool:
            with self.error_log.open("rb") as f:
                f.seek(offset)
                since = f.read().decode(errors="replace")
            if "[emerg]" in since or "[alert]" in since:
                servers.write_text(previous)
                raise NginxError(f"nginx rejected the reload:\n{since}")
            workers = self._workers()
            return bool(workers) and not workers & old

        wait_until(applied, self.timeout, what="nginx workers running the new config")
        self._blocks = server_blocks

    def stop(self) -> None:
        """SIGQUIT the master (graceful), then SIGKILL its process group after the timeout."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGQUIT)
            try:
                proc.wait(self.timeout)
            except subprocess.TimeoutExpired:
                # Killing the master alone would orphan its workers, which keep serving:
                # kill the group, which is exactly the session start_new_session made.
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        # A master that died abnormally can leave workers behind in its group; the group id
        # stays reserved while any of them lives, so this cannot hit another process.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            return

    def __enter__(self) -> PrivateNginx:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

"""App server command lines per kind, and health probes against real unix sockets."""

from __future__ import annotations

import asyncio
import shutil
import socket
import struct
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from relman.config import ServerConfig, load_config
from relman.supervisor.health import Probe, in_range, probe_socket, uwsgi_packet
from relman.supervisor.kinds import (
    UWSGI_GRACEFUL_TERM,
    installed_version,
    server_argv,
    socket_umask,
)

VENV = Path("/srv/shop/venvs/0123abcd")
RELEASE = Path("/srv/shop/releases/20261123T031500Z-1a2b3c4")
ROOT = Path("/srv/shop")
SOCK = Path("/srv/shop/run/20261123T031500Z-1a2b3c4.1.sock")


def server_config(tmp_path: Path, server_toml: str) -> ServerConfig:
    """The [server] table of a minimal relman.toml, loaded the way the daemon loads it."""
    path = tmp_path / "relman.toml"
    path.write_text('[app]\nname = "shop"\nrepo = "/srv/git/shop.git"\nroot = "/srv/shop"\n'
                    f"[server]\n{server_toml}\n")
    return load_config(path).server


def argv_for(tmp_path: Path, server_toml: str) -> list[str]:
    return server_argv(server_config(tmp_path, server_toml), venv=VENV, release_dir=RELEASE,
                       root=ROOT, socket=SOCK, stop_timeout=25.0)


def value_of(argv: list[str], flag: str) -> str:
    """The argument that follows *flag* in *argv*."""
    assert flag in argv, f"{flag} missing from {argv}"
    return argv[argv.index(flag) + 1]


def test_gunicorn_argv(tmp_path: Path) -> None:
    """gunicorn binds the instance's unix socket, runs in the release dir, the app comes last."""
    argv = argv_for(tmp_path, 'app = "shop.wsgi:application"\nworkers = 3\n'
                              'args = ["--timeout", "60"]')
    assert argv[0] == str(VENV / "bin" / "gunicorn")
    assert value_of(argv, "--bind") == f"unix:{SOCK}"
    assert value_of(argv, "--workers") == "3"
    assert value_of(argv, "--chdir") == str(RELEASE)
    assert value_of(argv, "--graceful-timeout") == "25"
    assert value_of(argv, "--timeout") == "60"
    assert argv[-1] == "shop.wsgi:application"


@pytest.mark.parametrize(("mode", "umask"), [("0660", "0o117"), ("0600", "0o177")])
def test_gunicorn_binds_with_the_socket_mode(tmp_path: Path, mode: str, umask: str) -> None:
    """gunicorn binds under its own --umask (default 0: a 0777 socket): relman passes the one
    that creates the socket with server.socket_mode."""
    argv = argv_for(tmp_path, f'app = "shop.wsgi:application"\nsocket_mode = "{mode}"')
    assert value_of(argv, "--umask") == umask
    assert int(umask, 0) == 0o777 & ~int(mode, 8)


@pytest.mark.parametrize(
    ("mode", "inherited", "umask"),
    [
        pytest.param(0o660, 0o022, 0o027, id="0660-group-keeps-x"),
        pytest.param(0o660, 0o000, 0o007, id="0660-daemon-umask-0"),
        pytest.param(0o600, 0o022, 0o077, id="0600-owner-only"),
        pytest.param(0o640, 0o022, 0o027, id="0640-group-read"),
        pytest.param(0o640, 0o000, 0o027, id="0640-no-group-write"),
        pytest.param(0o666, 0o000, 0o000, id="0666-nothing-denied"),
        pytest.param(0o666, 0o022, 0o022, id="0666-keeps-daemon-umask"),
        pytest.param(0o660, 0o077, 0o077, id="stricter-daemon-umask-kept"),
    ],
)
def test_socket_umask(mode: int, inherited: int, umask: int) -> None:
    """A socket bound under socket_umask(mode) lets nobody write (connect) whom *mode* does
    not let; the owner's bits and the daemon's own umask are kept."""
    got = socket_umask(mode, inherited)
    assert got == umask
    bound = 0o777 & ~got
    assert bound & 0o222 & ~mode == 0, "no write (connect) beyond the mode"
    assert bound & 0o700 == 0o700 & ~inherited
    assert got & inherited == inherited


@pytest.mark.parametrize(
    ("server_toml", "bind", "other_bind", "target"),
    [
        pytest.param('kind = "uwsgi"\napp = "shop.wsgi"', "--http-socket", "--socket",
                     ["--module", "shop.wsgi"], id="http-module"),
        pytest.param('kind = "uwsgi"\nprotocol = "uwsgi"\napp = "shop.wsgi"', "--socket",
                     "--http-socket", ["--module", "shop.wsgi"], id="uwsgi-module"),
        pytest.param('kind = "uwsgi"\nwsgi_file = "deploy/wsgi.py"', "--http-socket",
                     "--socket", ["--wsgi-file", "deploy/wsgi.py"], id="http-wsgi-file"),
        pytest.param('kind = "uwsgi"\nprotocol = "uwsgi"\nwsgi_file = "wsgi.py"', "--socket",
                     "--http-socket", ["--wsgi-file", "wsgi.py"], id="uwsgi-wsgi-file"),
    ],
)
def test_uwsgi_argv(tmp_path: Path, server_toml: str, bind: str, other_bind: str,
                    target: list[str]) -> None:
    """uWSGI listens with the protocol's socket flag, needs its app, and stops gracefully."""
    argv = argv_for(tmp_path, server_toml + '\nworkers = 4\nargs = ["--enable-threads"]')
    assert argv[0] == str(VENV / "bin" / "uwsgi")
    assert value_of(argv, bind) == str(SOCK)
    assert other_bind not in argv
    assert value_of(argv, target[0]) == target[1]
    assert {"--module", "--wsgi-file"} & set(argv) == {target[0]}
    assert value_of(argv, "--processes") == "4"
    assert value_of(argv, "--chdir") == str(RELEASE)
    assert "--master" in argv
    assert "--need-app" in argv
    # SIGTERM must let in-flight requests finish (measured, ANCHORS.md).
    assert value_of(argv, "--hook-master-start") == "unix_signal:15 gracefully_kill_them_all"
    assert UWSGI_GRACEFUL_TERM == "unix_signal:15 gracefully_kill_them_all"
    assert "--die-on-term" not in argv
    assert argv[-1] == "--enable-threads"


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        pytest.param('"bin/serve --listen {socket} --code {release} --state {root}/shared"',
                     ["bin/serve", "--listen", str(SOCK), "--code", str(RELEASE), "--state",
                      f"{ROOT}/shared"], id="string"),
        pytest.param('["srv", "--bind=unix:{socket}", "{release}/app.py"]',
                     ["srv", f"--bind=unix:{SOCK}", f"{RELEASE}/app.py"], id="array"),
        pytest.param('["srv", "{socket}", "--json={{\\"a\\": 1}}"]',
                     ["srv", str(SOCK), '--json={"a": 1}'], id="literal-braces"),
    ],
)
def test_command_argv_substitutes_placeholders(tmp_path: Path, command: str,
                                               expected: list[str]) -> None:
    """kind = "command" fills in {socket}, {release} and {root} and appends server.args."""
    argv = argv_for(tmp_path, f'kind = "command"\ncommand = {command}\nargs = ["--x={{y}}"]')
    assert argv == [*expected, "--x={y}"]


def decode_uwsgi(packet: bytes) -> tuple[tuple[int, int, int], dict[str, str]]:
    """The header and the variables of a uwsgi packet, read by the protocol's byte lengths."""
    header = struct.unpack("<BHB", packet[:4])
    body, variables, at = packet[4:], {}, 0
    assert header[1] == len(body)
    while at < len(body):
        (size,) = struct.unpack_from("<H", body, at)
        key = body[at + 2:at + 2 + size].decode()
        at += 2 + size
        (size,) = struct.unpack_from("<H", body, at)
        variables[key] = body[at + 2:at + 2 + size].decode()
        at += 2 + size
    assert at == len(body)
    return header, variables


def test_uwsgi_packet_decodes() -> None:
    """The packet has modifier1 0, a little-endian body size, and the request's variables."""
    host = "shop-" + "x" * 40 + ".test"
    packet = uwsgi_packet("/health?deep=1", host)
    (modifier1, size, modifier2), env = decode_uwsgi(packet)
    assert (modifier1, modifier2) == (0, 0)
    assert size > 255  # two bytes, low byte first
    assert packet[1:3] == bytes([size & 0xFF, size >> 8])
    assert env["REQUEST_METHOD"] == "GET"
    assert env["REQUEST_URI"] == "/health?deep=1"
    assert env["PATH_INFO"] == "/health"
    assert env["QUERY_STRING"] == "deep=1"
    assert env["HTTP_HOST"] == env["SERVER_NAME"] == host
    assert env["SERVER_PROTOCOL"] == "HTTP/1.0"


def test_uwsgi_packet_lengths_are_bytes() -> None:
    """Variable lengths count bytes, so a non-ASCII path decodes intact."""
    _, env = decode_uwsgi(uwsgi_packet("/santé", "localhost"))
    assert env["PATH_INFO"] == "/santé"


@pytest.mark.parametrize(
    ("status", "expect", "ok"),
    [
        pytest.param(200, (200, 399), True, id="low-edge"),
        pytest.param(399, (200, 399), True, id="high-edge"),
        pytest.param(302, (200, 399), True, id="redirect"),
        pytest.param(400, (200, 399), False, id="above"),
        pytest.param(199, (200, 399), False, id="below"),
        pytest.param(503, (200, 599), True, id="wide"),
        pytest.param(None, (200, 399), False, id="no-answer"),
    ],
)
def test_in_range(status: int | None, expect: tuple[int, int], ok: bool) -> None:
    """A status is healthy when it lies in the inclusive expect range; no answer never is."""
    assert in_range(status, expect) is ok


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path: unix socket paths are limited to 107 bytes."""
    path = Path(tempfile.mkdtemp(prefix="relman-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


class TinyServer:
    """A one-thread server on a unix socket that records each request and sends *reply*."""

    def __init__(self, path: Path, reply: bytes, *, protocol: str = "http") -> None:
        self.reply, self.protocol = reply, protocol
        self.requests: list[bytes] = []
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(path))
        self.listener.listen()
        self.listener.settimeout(0.05)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def read_request(self, conn: socket.socket) -> bytes:
        data = b""
        while not self.complete(data):
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
        return data

    def complete(self, data: bytes) -> bool:
        if self.protocol == "uwsgi":
            return len(data) >= 4 and len(data) >= 4 + struct.unpack("<H", data[1:3])[0]
        return b"\r\n\r\n" in data

    def serve(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(5)
                self.requests.append(self.read_request(conn))
                conn.sendall(self.reply)

    def close(self) -> None:
        self.stopped.set()
        self.thread.join(5)
        self.listener.close()


def probe(sock: Path, *, protocol: str = "http", timeout: float = 5) -> Probe:
    return asyncio.run(probe_socket(sock, protocol=protocol, path="/health", timeout=timeout))


@pytest.mark.parametrize(
    ("reply", "status"),
    [
        pytest.param(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", 200, id="ok"),
        pytest.param(b"HTTP/1.1 503 Service Unavailable\r\n\r\n", 503, id="unavailable"),
    ],
)
def test_probe_socket_http(short_dir: Path, reply: bytes, status: int) -> None:
    """An HTTP GET over the unix socket returns the server's status and status line."""
    server = TinyServer(short_dir / "app.sock", reply)
    try:
        found = probe(short_dir / "app.sock")
    finally:
        server.close()
    assert found == Probe(status, reply.split(b"\r\n")[0].decode())
    request = server.requests[0]
    assert request.startswith(b"GET /health HTTP/1.0\r\n")
    assert b"\r\nHost: localhost\r\n" in request


def test_probe_socket_uwsgi(short_dir: Path) -> None:
    """A uwsgi-protocol probe sends a packet uWSGI can read and reads the HTTP status back."""
    server = TinyServer(short_dir / "app.sock", b"HTTP/1.1 200 OK\r\n\r\n", protocol="uwsgi")
    try:
        found = probe(short_dir / "app.sock", protocol="uwsgi")
    finally:
        server.close()
    assert found.status == 200
    _, env = decode_uwsgi(server.requests[0])
    assert env["PATH_INFO"] == "/health"


def test_probe_socket_without_listener(short_dir: Path) -> None:
    """A stale socket file with nothing listening gives no status and names the socket."""
    stale = short_dir / "app.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(stale))
    dead.close()
    found = probe(stale)
    assert found.status is None
    assert str(stale) in found.detail
    assert "refused" in found.detail.lower()


def test_probe_socket_missing_file(short_dir: Path) -> None:
    """A socket path that does not exist gives no status and names the socket."""
    found = probe(short_dir / "gone.sock")
    assert found.status is None
    assert str(short_dir / "gone.sock") in found.detail


def test_probe_socket_never_answering(short_dir: Path) -> None:
    """A server that accepts the connection but never answers times out with a reason."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(short_dir / "app.sock"))
    listener.listen()  # queued in the backlog, never accepted
    try:
        found = probe(short_dir / "app.sock", timeout=0.2)
    finally:
        listener.close()
    assert found == Probe(None, "no answer within 0.2s")


def test_probe_socket_non_http_answer(short_dir: Path) -> None:
    """An answer that is not an HTTP status line gives no status and quotes what came back."""
    server = TinyServer(short_dir / "app.sock", b"hello\r\n")
    try:
        found = probe(short_dir / "app.sock")
    finally:
        server.close()
    assert found.status is None
    assert "no HTTP status line" in found.detail
    assert "hello" in found.detail


def fake_venv(tmp_path: Path, gunicorn_version: str | None) -> Path:
    """A venv whose site-packages holds gunicorn's dist-info at *gunicorn_version* (or no
    gunicorn), which is all relman reads of it."""
    venv = tmp_path / "venv"
    site = venv / "lib" / "python3.11" / "site-packages"
    site.mkdir(parents=True)
    if gunicorn_version is not None:
        info = site / f"gunicorn-{gunicorn_version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: gunicorn\n"
                                       f"Version: {gunicorn_version}\n")
    return venv


@pytest.mark.parametrize(
    ("version", "args", "expected"),
    [("27.0.1", "", ["--no-control-socket"]),
     ("25.1.0", "", ["--no-control-socket"]),
     ("25.0.2", "", []),
     ("23.0.0", "", []),
     (None, "", []),
     ("27.0.1", 'args = ["--control-socket", "/srv/shop/run/mine.ctl"]', []),
     ("27.0.1", 'args = ["--control-socket=/srv/shop/run/mine.ctl"]', []),
     ("27.0.1", 'args = ["--no-control-socket"]', [])],
    ids=["27", "25.1", "25.0", "23", "no-gunicorn", "user-path", "user-path-equals",
         "user-off"])
def test_gunicorn_control_socket_is_off_where_gunicorn_has_one(
        tmp_path: Path, version: str | None, args: str, expected: list[str]) -> None:
    """gunicorn gets --no-control-socket only when its venv's gunicorn binds one by default
    (25.1 and later) and server.args says nothing about it."""
    server = server_config(tmp_path, f'kind = "gunicorn"\napp = "shop.wsgi"\n{args}')
    argv = server_argv(server, venv=fake_venv(tmp_path, version), release_dir=RELEASE,
                       root=ROOT, socket=SOCK, stop_timeout=25.0)
    ours = argv[:len(argv) - len(server.args) - 1]
    assert [a for a in ours if "control-socket" in a] == expected
    assert argv.count("--no-control-socket") <= 1


def test_installed_version_reads_the_dist_info_as_importlib_metadata_would(
        tmp_path: Path) -> None:
    """The version comes from METADATA's Version header, the distribution found by its
    normalised name (case, `-`, `_` and `.` alike); a dist-info without METADATA or without
    a Version header, or another distribution, is no version."""
    site = tmp_path / "venv" / "lib" / "python3.12" / "site-packages"
    for folder, text in [("Typing_Extensions-4.16.0.dist-info",
                          "Metadata-Version: 2.4\nName: typing_extensions\n"
                          "Version: 4.16.0+local\n\nVersion: 9\n"),
                         ("gunicorn_extra-9.0.dist-info", "Name: gunicorn-extra\nVersion: 9.0\n"),
                         ("broken-1.0.dist-info", None),
                         ("headless-1.0.dist-info", "Name: headless\n")]:
        (site / folder).mkdir(parents=True)
        if text is not None:
            (site / folder / "METADATA").write_text(text)
    venv = tmp_path / "venv"
    assert installed_version(venv, "typing-extensions") == (4, 16, 0)
    assert installed_version(venv, "Typing.Extensions") == (4, 16, 0)
    assert installed_version(venv, "gunicorn") is None
    assert installed_version(venv, "broken") is None
    assert installed_version(venv, "headless") is None

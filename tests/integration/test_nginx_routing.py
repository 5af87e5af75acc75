"""The rendered nginx config routes live, preview and switched traffic through a real nginx."""

from __future__ import annotations

import grp
import http.client
import http.server
import json
import os
import shutil
import socket
import socketserver
import struct
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from relman.nginxconf import render_server_block
from testing.needs import need, need_root
from testing.nginx import NginxError, PrivateNginx, require_nginx
from testing.waiting import wait_until

pytestmark = pytest.mark.integration


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


IPV6 = _has_ipv6_loopback()


class _LabelledServer(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True
    label = ""


class _HTTPHandler(http.server.BaseHTTPRequestHandler):
    """Answers every GET with which server it is and the headers it received."""

    server: _LabelledServer

    def do_GET(self) -> None:
        headers = {k.lower(): v for k, v in self.headers.items()}
        body = json.dumps({"server": self.server.label, "headers": headers}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet (the default also fails: a unix peer has no address to print)."""


class _UwsgiHandler(socketserver.StreamRequestHandler):
    """Speaks the uwsgi protocol: answers with which server it is and the vars it received."""

    server: _LabelledServer

    def handle(self) -> None:
        _modifier1, size, _modifier2 = struct.unpack("<BHB", self.rfile.read(4))
        data, env, pos = self.rfile.read(size), {}, 0
        while pos < size:
            (klen,) = struct.unpack_from("<H", data, pos)
            key = data[pos + 2 : pos + 2 + klen].decode()
            pos += 2 + klen
            (vlen,) = struct.unpack_from("<H", data, pos)
            env[key] = data[pos + 2 : pos + 2 + vlen].decode()
            pos += 2 + vlen
        body = json.dumps({"server": self.server.label, "env": env}).encode()
        head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}"
        self.wfile.write(head.encode() + b"\r\n\r\n" + body)


Handler = type[socketserver.BaseRequestHandler]


def _serve(path: Path, label: str, handler: Handler) -> _LabelledServer:
    server = _LabelledServer(str(path), handler)
    server.label = label
    if os.geteuid() == 0:
        # As on a real host: the socket's group is the web server's, nobody else may connect.
        os.chown(path, -1, grp.getgrnam("www-data").gr_gid)
        path.chmod(0o660)
    else:
        path.chmod(0o666)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    return server


def _point(link: Path, target: str) -> None:
    """Re-point *link* atomically, the way relman switches sockets."""
    tmp = link.with_name(f".{link.name}.tmp")
    os.symlink(target, tmp)
    os.replace(tmp, link)


class Site:
    """An app root with two running servers, A (live) and B (next), behind a private nginx."""

    def __init__(self, base: Path, handler: Handler) -> None:
        self.root = base / "shop"
        self.run = self.root / "run"
        self.run.mkdir(parents=True, mode=0o755)
        self.servers = [_serve(self.run / f"{label}.sock", label, handler) for label in ("A", "B")]
        _point(self.run / "app.sock", "A.sock")
        _point(self.run / "next.sock", "B.sock")

    def blocks(self, protocol: str) -> Callable[[str], str]:
        def render(listen: str) -> str:
            text = render_server_block(
                name="shop", root=self.root, protocol=protocol, listen=listen
            )
            if IPV6:  # a second listen, so the "::1:next" map key meets a real ::1 peer
                port = listen.rpartition(":")[2]
                both = f"listen {listen};\n    listen [::1]:{port};"
                text = text.replace(f"listen {listen};", both)
            return text

        return render

    def close(self) -> None:
        for server in self.servers:
            server.shutdown()
            server.server_close()


@pytest.fixture
def base() -> Iterator[Path]:
    # Not tmp_path: pytest makes it 0700 under a 0700 parent, and the nginx workers
    # (www-data when the tests run as root) must reach the sockets inside.
    path = Path(tempfile.mkdtemp(dir="/tmp", prefix="relman-nginx-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


@pytest.fixture
def site(base: Path) -> Iterator[Site]:
    site = Site(base, _HTTPHandler)
    yield site
    site.close()


@pytest.fixture
def nginx(base: Path, site: Site) -> Iterator[PrivateNginx]:
    require_nginx()
    with PrivateNginx(base, site.blocks("http")) as server:
        yield server


def get(
    nginx: PrivateNginx,
    headers: dict[str, str] | None = None,
    *,
    host: str = "127.0.0.1",
    source: str | None = None,
) -> dict[str, Any]:
    """GET / through nginx and return the JSON the app server answered with."""
    conn = http.client.HTTPConnection(
        host, nginx.port, timeout=5, source_address=(source, 0) if source else None
    )
    try:
        conn.request("GET", "/", headers=headers or {})
        response = conn.getresponse()
        body = response.read()
    finally:
        conn.close()
    assert response.status == 200, (response.status, body, nginx.error_log_tail())
    data: dict[str, Any] = json.loads(body)
    return data


def test_plain_request_reaches_the_live_socket(nginx: PrivateNginx) -> None:
    """Without the preview header a request goes to the server behind run/app.sock."""
    assert get(nginx)["server"] == "A"


@pytest.mark.parametrize("value", ["next", "NEXT"])
def test_preview_header_from_loopback_reaches_next(nginx: PrivateNginx, value: str) -> None:
    """X-Relman-Target: next from 127.0.0.1 goes to run/next.sock (map keys ignore case)."""
    assert get(nginx, {"X-Relman-Target": value})["server"] == "B"


def test_preview_header_from_ipv6_loopback_reaches_next(nginx: PrivateNginx) -> None:
    """The "::1:next" map key matches a request from ::1."""
    need(IPV6, "no IPv6 loopback (::1)", "run on a host with ::1 on lo")
    assert get(nginx, {"X-Relman-Target": "next"}, host="::1")["server"] == "B"
    assert get(nginx, host="::1")["server"] == "A"


def test_preview_header_from_another_address_reaches_live(nginx: PrivateNginx) -> None:
    """From any address but 127.0.0.1 and ::1 (here 127.0.0.2) the header is ignored."""
    assert get(nginx, {"X-Relman-Target": "next"}, source="127.0.0.2")["server"] == "A"


@pytest.mark.parametrize("target", ["", "next"])
def test_app_never_sees_the_preview_header(nginx: PrivateNginx, target: str) -> None:
    """The app gets the forwarding headers but never X-Relman-Target."""
    headers = get(nginx, {"X-Relman-Target": target} if target else {})["headers"]
    assert "x-relman-target" not in headers
    assert headers["x-real-ip"] == "127.0.0.1"
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert headers["x-forwarded-proto"] == "http"
    assert headers["host"] == "127.0.0.1"


def test_switching_the_symlink_needs_no_reload(nginx: PrivateNginx, site: Site) -> None:
    """Re-pointing run/app.sock sends the next request to the new server, same workers."""
    workers = {p.pid for p in psutil.Process(nginx.pid).children()}
    assert get(nginx)["server"] == "A"
    _point(site.run / "app.sock", "B.sock")
    assert get(nginx)["server"] == "B"
    _point(site.run / "app.sock", "A.sock")
    assert get(nginx)["server"] == "A"
    assert {p.pid for p in psutil.Process(nginx.pid).children()} == workers
    assert "reconfiguring" not in nginx.error_log_tail(100)


def test_workers_run_as_www_data(nginx: PrivateNginx) -> None:
    """As root, the private nginx's workers run as www-data, like a real server's."""
    need_root("workers change user only when nginx starts as root")
    # A worker drops root in its own start-up, after the fork that _ready() looks for.
    wait_until(lambda: {p.username() for p in psutil.Process(nginx.pid).children()}
               == {"www-data"}, timeout=10, what="nginx's workers to run as www-data")


def test_uwsgi_variant_passes_nginx_t(base: Path) -> None:
    """The uwsgi server block, included into a full config, passes `nginx -t`."""
    require_nginx()
    nginx = PrivateNginx(base, "")
    output = nginx.check_config(
        lambda listen: render_server_block(
            name="shop", root=base / "shop", protocol="uwsgi", listen=listen
        )
    )
    assert "test is successful" in output


def test_a_broken_config_fails_start_with_the_log(base: Path) -> None:
    """start() raises with nginx's own complaint instead of timing out, and leaves nothing."""
    require_nginx()
    nginx = PrivateNginx(base, "no_such_directive on;")
    with pytest.raises(NginxError, match="unknown directive"):
        nginx.start()
    assert nginx.pid is None


def test_uwsgi_variant_routes_and_strips_the_header(nginx: PrivateNginx, base: Path) -> None:
    """After a reload to the uwsgi block, live and preview routing hold, header stripped."""
    uwsgi_site = Site(base / "uwsgi", _UwsgiHandler)
    try:
        nginx.reload(uwsgi_site.blocks("uwsgi"))
        live = get(nginx)
        preview = get(nginx, {"X-Relman-Target": "next"})
    finally:
        uwsgi_site.close()
    assert (live["server"], preview["server"]) == ("A", "B")
    for answer in (live, preview):
        assert "HTTP_X_RELMAN_TARGET" not in answer["env"]
        assert answer["env"]["REMOTE_ADDR"] == "127.0.0.1"

"""A private package index (PEP 503 "simple" layout) served over HTTP or HTTPS from a temp dir
on a free loopback port, with a wheel written by hand and real wheels cached once."""

from __future__ import annotations

import base64
import functools
import hashlib
import html
import http.server
import re
import shutil
import ssl
import subprocess
import sys
import threading
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from testing.ports import free_port

# Wheels downloaded once for every run, as the uv cache is (Makefile: UV_CACHE_DIR).
WHEEL_CACHE = Path.home() / ".cache" / "relman-tests-wheels"


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
    return f"sha256={digest.decode()}"


def write_wheel(dest: Path, name: str, version: str, module: str) -> Path:
    """A pure-Python wheel of one module *name* (dashes as underscores) holding *module*."""
    dist = re.sub(r"[-_.]+", "_", name)
    files = {
        f"{dist}/__init__.py": module.encode(),
        f"{dist}-{version}.dist-info/METADATA":
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{dist}-{version}.dist-info/WHEEL":
            b"Wheel-Version: 1.0\nGenerator: relman-tests\nRoot-Is-Purelib: true\n"
            b"Tag: py3-none-any\n",
    }
    record = f"{dist}-{version}.dist-info/RECORD"
    lines = [f"{path},{_record_hash(data)},{len(data)}" for path, data in files.items()]
    files[record] = ("\n".join([*lines, f"{record},,"]) + "\n").encode()
    dest.mkdir(parents=True, exist_ok=True)
    wheel = dest / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        for path, data in files.items():
            z.writestr(path, data)
    return wheel


def cached_wheels(*requirements: str) -> list[Path]:
    """Wheels of *requirements* ("gunicorn==27.0.1"), pip-downloaded once into WHEEL_CACHE
    (with the machine's pip settings) and found there afterwards."""
    found = []
    for req in requirements:
        name, _, version = req.partition("==")
        pattern = f"{re.sub(r'[-_.]+', '_', name)}-{version}-*.whl"
        matches = sorted(WHEEL_CACHE.glob(pattern))
        if not matches:
            subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                            "--only-binary=:all:", "-d", str(WHEEL_CACHE), req], check=True)
            matches = sorted(WHEEL_CACHE.glob(pattern))
        found.append(matches[0])
    return found


def _project(wheel: Path) -> str:
    return re.sub(r"[-_.]+", "-", wheel.name.split("-", 1)[0]).lower()


def write_simple_index(root: Path, wheels: Sequence[Path]) -> None:
    """root/simple/<project>/index.html linking root/files/<wheel> with its sha256."""
    files = root / "files"
    files.mkdir(parents=True, exist_ok=True)
    projects: dict[str, list[str]] = {}
    for wheel in wheels:
        shutil.copy2(wheel, files / wheel.name)
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
        projects.setdefault(_project(wheel), []).append(
            f'<a href="../../files/{html.escape(wheel.name)}#sha256={digest}">'
            f"{html.escape(wheel.name)}</a><br>")
    for project, links in projects.items():
        page = root / "simple" / project / "index.html"
        page.parent.mkdir(parents=True, exist_ok=True)
        page.write_text("<!DOCTYPE html><html><body>\n" + "\n".join(links) + "\n</body></html>\n")
    index = "".join(f'<a href="{p}/">{p}</a><br>\n' for p in sorted(projects))
    (root / "simple" / "index.html").write_text(
        f"<!DOCTYPE html><html><body>\n{index}</body></html>\n")


@dataclass(frozen=True)
class Certificates:
    ca: Path    # the private CA that signed the server's certificate
    cert: Path  # the server's, for 127.0.0.1
    key: Path


def make_certificates(where: Path) -> Certificates:
    """A private CA and a server certificate for IP 127.0.0.1 that it signed (openssl)."""
    where.mkdir(parents=True, exist_ok=True)
    ca, ca_key = where / "ca.pem", where / "ca.key"
    cert, key, csr, ext = where / "cert.pem", where / "key.pem", where / "cert.csr", where / "ext"

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key),
            "-out", str(ca), "-days", "2", "-subj", "/CN=relman tests CA")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
            "-subj", "/CN=127.0.0.1")
    ext.write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
            "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(ext))
    return Certificates(ca, cert, key)


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def serve_index(root: Path, tls: Certificates | None = None) -> Iterator[str]:
    """Serve *root* on a free loopback port in a thread; yields the simple index's URL."""
    handler = functools.partial(_Quiet, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    if tls is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(tls.cert, tls.key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{server.server_address[1]}/simple/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)

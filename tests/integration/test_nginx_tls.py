"""nginx-config for a public server, against a real nginx and a certificate made here:
`nginx -t` for each variant, then https to the app, the redirect, the ACME webroot, and a
deploy whose checks go through the TLS server."""

from __future__ import annotations

import http.client
import shutil
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest

from testing.git import release_version
from testing.load import Load
from testing.nginx import PrivateNginx
from testing.ports import free_port
from testing.stack import nginx_user_and_group

pytestmark = pytest.mark.integration

NOT_LOOPBACK_FOR_NGINX = "127.0.0.2"  # a loopback address, but not one nginx's map exempts


@pytest.fixture
def cert(base_dir: Path) -> tuple[Path, Path]:
    """A self-signed certificate for localhost and 127.0.0.1, and its key."""
    cert, key = base_dir / "cert.pem", base_dir / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-days", "2", "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert),
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True)
    return cert, key


def client_context(cert: Path, *, alpn: tuple[str, ...] = ()) -> ssl.SSLContext:
    """A client context that trusts only *cert* and offers the *alpn* protocols (none: nginx
    speaks HTTP/1.1, all http.client knows)."""
    context = ssl.create_default_context(cafile=str(cert))
    if alpn:
        context.set_alpn_protocols(list(alpn))
    return context


def config(base_dir: Path, kind: str = "gunicorn") -> Path:
    """A relman.toml for nginx-config alone (nothing is deployed from it)."""
    path = base_dir / f"{kind}.toml"
    server = ('kind = "uwsgi"\nwsgi_file = "wsgi.py"\nprotocol = "uwsgi"' if kind == "uwsgi"
              else 'kind = "gunicorn"\napp = "app:server"')
    path.write_text(f'[app]\nname = "shop"\nrepo = "{base_dir}/repo"\n'
                    f'root = "{base_dir}/shop"\n[server]\n{server}\n')
    return path


def nginx_config(config_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "relman", "--config", str(config_path),
                           "nginx-config", *args], capture_output=True, text=True, check=True)


def letsencrypt_dir(base_dir: Path, cert: tuple[Path, Path], domain: str) -> Path:
    """A certbot-like live/ directory holding *cert* as DOMAIN/fullchain.pem, privkey.pem."""
    live = base_dir / "letsencrypt" / "live"
    (live / domain).mkdir(parents=True)
    shutil.copy(cert[0], live / domain / "fullchain.pem")
    shutil.copy(cert[1], live / domain / "privkey.pem")
    return live


@pytest.mark.parametrize(("kind", "extra"), [
    ("gunicorn", []),
    ("uwsgi", []),
    ("gunicorn", ["--ipv6"]),
    ("gunicorn", ["--client-max-body-size", "20m"]),
    ("uwsgi", ["--ipv6", "--client-max-body-size", "0", "--tls-listen", "8443 default_server"]),
])
def test_tls_variants_pass_nginx_t(base_dir: Path, cert: tuple[Path, Path], kind: str,
                                   extra: list[str]) -> None:
    """--tls with each option passes `nginx -t` on this nginx, without a deprecation warning
    (the http2 form follows `nginx -v`)."""
    out = nginx_config(config(base_dir, kind), "--tls", str(cert[0]), str(cert[1]), *extra)
    verdict = PrivateNginx(base_dir, "").check_config(out.stdout)
    assert "test is successful" in verdict
    assert "[warn]" not in verdict, verdict


def test_letsencrypt_variants_pass_nginx_t(base_dir: Path, cert: tuple[Path, Path]) -> None:
    """--letsencrypt before the certificate (plain http, with a warning) and after it both
    pass `nginx -t`: the order the man page gives works."""
    nginx = PrivateNginx(base_dir, "")
    live = base_dir / "letsencrypt" / "live"
    args = ["--letsencrypt", "shop.example.com", "--letsencrypt-dir", str(live), "--ipv6",
            "--acme-webroot", str(base_dir / "acme")]
    before = nginx_config(config(base_dir), *args)
    assert "relman: warning: no certificate at " in before.stderr
    assert "test is successful" in nginx.check_config(before.stdout)
    letsencrypt_dir(base_dir, cert, "shop.example.com")
    after = nginx_config(config(base_dir), *args)
    assert after.stderr == ""
    assert "ssl_certificate" in after.stdout
    assert "test is successful" in nginx.check_config(after.stdout)


def get(port: int, path: str, *, source: str = "127.0.0.1", host: str = "localhost"
        ) -> tuple[int, str, str]:
    """A plain http GET from *source*: (status, Location, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=(source, 0))
    try:
        conn.request("GET", path, headers={"Host": host})
        response = conn.getresponse()
        return response.status, response.getheader("Location") or "", response.read().decode()
    finally:
        conn.close()


def test_letsencrypt_server_redirects_but_serves_the_challenge(
        base_dir: Path, cert: tuple[Path, Path]) -> None:
    """From a non-exempt address, plain http gets a 301 to https, except certbot's challenge
    files, which nginx serves from the webroot."""
    live = letsencrypt_dir(base_dir, cert, "localhost")
    webroot = base_dir / "acme"
    (webroot / ".well-known" / "acme-challenge").mkdir(parents=True)
    (webroot / ".well-known" / "acme-challenge" / "token1").write_text("key-authorization\n")
    tls_port = free_port()
    user, _group = nginx_user_and_group()

    def blocks(listen: str) -> str:
        return nginx_config(config(base_dir), "--listen", listen, "--letsencrypt", "localhost",
                            "--letsencrypt-dir", str(live), "--acme-webroot", str(webroot),
                            "--tls-listen", f"127.0.0.1:{tls_port}").stdout

    with PrivateNginx(base_dir, blocks, user=user) as nginx:
        status, _, body = get(nginx.port, "/.well-known/acme-challenge/token1",
                              source=NOT_LOOPBACK_FOR_NGINX)
        assert (status, body) == (200, "key-authorization\n")
        status, location, _ = get(nginx.port, "/health?x=1", source=NOT_LOOPBACK_FOR_NGINX)
        assert (status, location) == (301, f"https://localhost:{tls_port}/health?x=1")


def test_deploy_checks_through_the_tls_server(make_app, app_repo: Path, base_dir: Path,
                                              cert: tuple[Path, Path]) -> None:
    """A deploy whose health.nginx_url is https through the --tls server previews and goes
    live with no failed request under https load; users get the app over https (HTTP/2 by
    ALPN), plain http is redirected, and loopback's plain http still reaches the app."""
    tls_port = free_port()
    user, group = nginx_user_and_group()
    app = make_app(start=False,
                   server={"kind": "gunicorn", "app": "app:server", "workers": 2,
                           "socket_group": group},
                   health={"path": "/health", "timeout": 30, "nginx_host": "localhost",
                           "nginx_url": f"https://127.0.0.1:{tls_port}/health"})
    # The daemon's checks verify the certificate with Python's default context, which
    # honours SSL_CERT_FILE: here the self-signed one, on a server the CA store's.
    app.start(env={"SSL_CERT_FILE": str(cert[0])})

    def blocks(listen: str) -> str:
        return app.relman("nginx-config", "--listen", listen, "--tls", str(cert[0]),
                          str(cert[1]), "--tls-listen", f"127.0.0.1:{tls_port}",
                          check=True).stdout

    with PrivateNginx(base_dir, blocks, user=user) as nginx:
        app.relman("deploy", "v1", check=True)
        release_version(app_repo, "v2")
        https = f"https://127.0.0.1:{tls_port}"
        with Load(https, ("/slow?ms=50", "/"), concurrency=8, max_seconds=120,
                  tls=client_context(cert[0])) as load:
            time.sleep(0.5)
            app.relman("deploy", "v2", check=True)
            time.sleep(0.5)
        assert load.result.failed == 0, (load.result.statuses, load.result.errors,
                                         nginx.error_log_tail(20))
        assert load.result.sent > 0
        # The preview went through the TLS server to run/next.sock.
        assert "next.sock" in nginx.access_log.read_text()

        h2 = client_context(cert[0], alpn=("h2", "http/1.1"))
        with socket.create_connection(("127.0.0.1", tls_port), timeout=10) as raw, \
                h2.wrap_socket(raw, server_hostname="localhost") as tls:
            assert tls.selected_alpn_protocol() == "h2"
        conn = http.client.HTTPSConnection("127.0.0.1", tls_port, timeout=10,
                                           context=client_context(cert[0]))
        conn.request("GET", "/")
        response = conn.getresponse()
        assert (response.status, response.read().decode().split()[:2]) == (200, ["sample", "v2"])
        conn.close()

        status, location, _ = get(nginx.port, "/", source=NOT_LOOPBACK_FOR_NGINX)
        assert (status, location) == (301, f"https://localhost:{tls_port}/")
        status, _, body = get(nginx.port, "/")
        assert status == 200
        assert body.split()[:2] == ["sample", "v2"]

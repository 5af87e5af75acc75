"""nginx-config for a public server: TLS, the redirect, IPv6, the body size, bad input."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from relman.cli import main
from relman.errors import UsageError
from relman.nginx_tls import (
    Acme,
    Tls,
    check_size,
    listen_lines,
    parse_version,
    tls_files,
    wants_http2_directive,
)
from relman.nginxconf import render_server_block

CONTRIB = Path(__file__).resolve().parents[2] / "contrib" / "nginx"
TLS = Tls(cert=Path("/etc/ssl/shop.pem"), key=Path("/etc/ssl/private/shop.key"))
DEMO = {"name": "shop", "root": Path("/srv/shop"), "protocol": "http",
        "server_name": "shop.example.com"}


def directives(text: str) -> str:
    """*text* without its comments."""
    return "\n".join(line.partition("#")[0] for line in text.splitlines())


@pytest.mark.parametrize(("version", "directive"), [
    (None, False),
    ("nginx version: nginx/1.22.1", False),
    ("1.25.0", False),
    ("1.25.1", True),
    ("nginx version: nginx/1.27.4", True),
    ("2.0.0", True),
])
def test_http2_form_follows_the_nginx_version(version: str | None, directive: bool) -> None:
    """`http2 on;` from nginx 1.25.1 on; the listen parameter before, or when unknown."""
    assert wants_http2_directive(version) is directive


def test_a_version_that_is_not_one_is_a_usage_error() -> None:
    """--nginx-version must look like 1.22.1."""
    assert parse_version("nginx/1.x") is None
    with pytest.raises(UsageError, match="--nginx-version"):
        wants_http2_directive("latest")


@pytest.mark.parametrize("size", ["0", "20m", "512k", "1G", "1048576"])
def test_nginx_sizes_are_accepted(size: str) -> None:
    """Digits with an optional k, m or g suffix, either case."""
    check_size(size)


@pytest.mark.parametrize("size", ["", "20 m", "20mb", "1.5m", "-1", "20m;", "m"])
def test_other_sizes_are_refused(size: str) -> None:
    """Anything nginx would not read as a size is a usage error naming the option."""
    with pytest.raises(UsageError, match="--client-max-body-size"):
        check_size(size)


def test_listens_with_tls_and_ipv6_keep_the_port_and_options() -> None:
    """[::] listens reuse the port and the options after the address."""
    tls = Tls(cert=TLS.cert, key=TLS.key, listen="127.0.0.1:8443 default_server")
    assert listen_lines("127.0.0.1:8080 default_server", tls, ipv6=True) == [
        "listen 127.0.0.1:8080 default_server;",
        "listen [::]:8080 default_server;",
        "listen 127.0.0.1:8443 default_server ssl http2;",
        "listen [::]:8443 default_server ssl http2;",
    ]


def test_ipv6_without_tls_adds_the_plain_listen_only() -> None:
    out = render_server_block(**DEMO, ipv6=True)  # type: ignore[arg-type]
    assert "    listen 80;\n    listen [::]:80;\n    server_name" in out
    assert "ssl" not in directives(out)


def test_ipv6_needs_a_port_in_listen() -> None:
    """A listen value without a port (a unix socket) cannot be repeated on [::]."""
    with pytest.raises(UsageError, match="has no port"):
        render_server_block(**DEMO, listen="unix:/run/shop.sock", ipv6=True)  # type: ignore[arg-type]


def test_tls_block_listens_redirects_and_uses_mozilla_intermediate() -> None:
    """One server block: 80 and 443 ssl http2, the certificate, TLS 1.2+, and the redirect."""
    out = render_server_block(**DEMO, tls=TLS)  # type: ignore[arg-type]
    code = directives(out)
    assert "    listen 80;\n    listen 443 ssl http2;\n" in code
    assert "ssl_certificate /etc/ssl/shop.pem;" in code
    assert "ssl_certificate_key /etc/ssl/private/shop.key;" in code
    assert "ssl_protocols TLSv1.2 TLSv1.3;" in code
    ciphers = re.search(r"ssl_ciphers (\S+);", code)[1].split(":")  # type: ignore[index]
    assert all(c.startswith("ECDHE-") and ("-GCM-" in c or "CHACHA20" in c) for c in ciphers)
    assert "if ($relman_shop_to_https) {\n        return 301 https://$host$request_uri;" in code
    assert 'map "$scheme $remote_addr $uri" $relman_shop_to_https {' in code
    assert "http2 on;" not in code
    assert code.count("server {") == 1
    assert code.index("return 301") < code.index("location / {")


def test_tls_on_new_nginx_uses_the_http2_directive() -> None:
    """With http2_directive the listen keeps only ssl and the server says `http2 on;`."""
    out = render_server_block(**DEMO, tls=Tls(cert=TLS.cert, key=TLS.key,  # type: ignore[arg-type]
                                              http2_directive=True))
    assert "listen 443 ssl;" in out
    assert "    http2 on;\n" in out


def test_redirect_names_a_port_other_than_443() -> None:
    out = render_server_block(**DEMO, tls=Tls(cert=TLS.cert, key=TLS.key,  # type: ignore[arg-type]
                                              listen="127.0.0.1:8443"))
    assert "return 301 https://$host:8443$request_uri;" in out


def test_loopback_stays_on_plain_http() -> None:
    """relman's checks from loopback over http are proxied, not answered with a 301 (which
    the default health.expect would accept without the app being reached)."""
    out = render_server_block(**DEMO, tls=TLS)  # type: ignore[arg-type]
    block = out[out.index("$relman_shop_to_https {"):]
    lines = block[: block.index("}")].splitlines()
    assert lines.index('    "~^http (127\\.0\\.0\\.1|::1) "                0;') < \
        lines.index('    "~^http "                                   1;')


def test_acme_location_comes_first_and_is_not_redirected() -> None:
    """certbot's challenge is served from the webroot over plain http, before the redirect."""
    acme = Acme(webroot=Path("/var/www/letsencrypt"), domain="shop.example.com")
    out = render_server_block(**DEMO, tls=TLS, acme=acme)  # type: ignore[arg-type]
    code = directives(out)
    assert ("location ^~ /.well-known/acme-challenge/ {\n        root /var/www/letsencrypt;"
            in code)
    assert code.index("acme-challenge/ {") < code.index("location / {")
    assert '"~^http \\S+ /\\.well-known/acme-challenge/"  0;' in code
    assert "certbot certonly --webroot -w /var/www/letsencrypt -d shop.example.com" in out


def test_client_max_body_size_is_a_server_directive() -> None:
    out = render_server_block(**DEMO, client_max_body_size="20m")  # type: ignore[arg-type]
    assert "    server_name shop.example.com;\n    client_max_body_size 20m;\n" in out


@pytest.mark.parametrize("protocol", ["http", "uwsgi"])
def test_tls_rendering_leaves_only_nginx_variables(protocol: str) -> None:
    """Each $ in the TLS pieces reaches nginx as a variable; none is a leftover placeholder."""
    acme = Acme(webroot=Path("/var/www/letsencrypt"), domain="shop.example.com")
    out = render_server_block(**{**DEMO, "protocol": protocol}, tls=TLS, acme=acme)  # type: ignore[arg-type]
    found = set(re.findall(r"\$(\w+)", directives(out)))
    assert {"scheme", "uri", "host", "request_uri", "relman_shop_to_https"} <= found
    assert not {"name", "root", "listens", "server_settings", "redirect_map"} & found


def test_a_key_we_may_not_look_at_is_taken_as_given(monkeypatch: pytest.MonkeyPatch) -> None:
    """A key under /etc/ssl/private (0710 root:ssl-cert) cannot be stat'ed by the deploy
    user, but nginx's master (root) reads it: that is not a missing file."""
    def denied(self: Path, **kwargs: object) -> object:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "stat", denied)
    tls = tls_files("/etc/ssl/shop.pem", "/etc/ssl/private/shop.key", listen="443",
                    http2_directive=False)
    assert tls.key == Path("/etc/ssl/private/shop.key")


def letsencrypt_demo() -> str:
    """What `nginx-config --server-name shop.example.com --letsencrypt shop.example.com
    --ipv6` prints for the demo once the certificate exists, for an nginx before 1.25.1."""
    live = Path("/etc/letsencrypt/live/shop.example.com")
    return render_server_block(
        **DEMO, ipv6=True,  # type: ignore[arg-type]
        tls=Tls(cert=live / "fullchain.pem", key=live / "privkey.pem"),
        acme=Acme(webroot=Path("/var/www/letsencrypt"), domain="shop.example.com"))


def test_contrib_letsencrypt_example_matches_the_template() -> None:
    """contrib/nginx/relman-http-letsencrypt.conf is what the template renders for it."""
    shipped = (CONTRIB / "relman-http-letsencrypt.conf").read_text(encoding="utf-8")
    assert shipped == letsencrypt_demo()


# The CLI: what an operator types.

def write_config(tmp_path: Path) -> Path:
    path = tmp_path / "relman.toml"
    path.write_text(f'[app]\nname = "shop"\nrepo = "/srv/git/shop.git"\n'
                    f'root = "{tmp_path / "root"}"\n[server]\nkind = "gunicorn"\n'
                    f'app = "app:server"\n')
    return path


def nginx_config(capsys: pytest.CaptureFixture[str], tmp_path: Path, *args: str
                 ) -> tuple[int, str, str]:
    """Run `relman nginx-config ARGS` in this process: (exit status, stdout, stderr)."""
    try:
        main(["--config", str(write_config(tmp_path)), "nginx-config", *args])
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def cert(tmp_path: Path) -> tuple[str, str]:
    """Certificate and key files (their content matters to nginx -t, not to rendering)."""
    (tmp_path / "cert.pem").write_text("cert\n")
    (tmp_path / "key.pem").write_text("key\n")
    return str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")


@pytest.mark.parametrize(("args", "message"), [
    (["--tls", "CERT", "KEY", "--letsencrypt", "shop.example.com"],
     "--tls and --letsencrypt cannot be used together"),
    (["--tls", "cert.pem", "KEY"], "--tls certificate 'cert.pem' must be an absolute path"),
    (["--tls", "CERT", "/nonexistent/key.pem"], "--tls key /nonexistent/key.pem does not exist"),
    (["--tls", "/nonexistent/cert.pem", "KEY"],
     "--tls certificate /nonexistent/cert.pem does not exist"),
    (["--tls", "CERT", "KEY", "--nginx-version", "new"], "--nginx-version 'new'"),
    (["--client-max-body-size", "20MB"], "--client-max-body-size '20MB' is not an nginx size"),
    (["--letsencrypt", "shop.example.com/../x"], "is not a domain name"),
    (["--letsencrypt", "shop.example.com", "--letsencrypt-dir", "live"], "--letsencrypt-dir"),
    (["--letsencrypt", "shop.example.com", "--acme-webroot", "/var/www/a b"], "--acme-webroot"),
    (["--tls", "CERT", "KEY", "--tls-listen", "443;"], "tls listen"),
    (["--ipv6", "--listen", "unix:/run/x.sock"], "--listen 'unix:/run/x.sock' has no port"),
])
def test_bad_input_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                          cert: tuple[str, str], args: list[str],
                                          message: str) -> None:
    """Each unusable option value exits 2 with one line naming it, and prints no config."""
    args = [{"CERT": cert[0], "KEY": cert[1]}.get(a, a) for a in args]
    code, out, err = nginx_config(capsys, tmp_path, *args)
    assert (code, out) == (2, "")
    assert message in err
    assert len(err.strip().splitlines()) == 1, err


def test_tls_with_files_renders_them(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                     cert: tuple[str, str]) -> None:
    code, out, err = nginx_config(capsys, tmp_path, "--tls", *cert, "--nginx-version", "1.22.1")
    assert (code, err) == (0, "")
    assert f"ssl_certificate {cert[0]};" in out
    assert "listen 443 ssl http2;" in out
    assert "server_name _;" in out


def test_letsencrypt_uses_certbots_paths_and_names_the_server(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """DOMAIN/fullchain.pem and privkey.pem under --letsencrypt-dir; server_name DOMAIN."""
    live = tmp_path / "live" / "shop.example.com"
    live.mkdir(parents=True)
    (live / "fullchain.pem").write_text("cert\n")
    code, out, err = nginx_config(capsys, tmp_path, "--letsencrypt", "shop.example.com",
                                  "--letsencrypt-dir", str(tmp_path / "live"),
                                  "--nginx-version", "1.27.0")
    assert (code, err) == (0, "")
    assert f"ssl_certificate {live}/fullchain.pem;" in out
    assert f"ssl_certificate_key {live}/privkey.pem;" in out
    assert "server_name shop.example.com;" in out
    assert "listen 443 ssl;\n" in out
    assert "http2 on;" in out
    assert "root /var/www/letsencrypt;" in out


def test_letsencrypt_before_the_certificate_serves_the_challenge_and_warns(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Without a certificate yet, the config is plain http with the ACME location (what
    certbot needs to get one), and stderr says what to run next."""
    code, out, err = nginx_config(capsys, tmp_path, "--letsencrypt", "shop.example.com",
                                  "--letsencrypt-dir", str(tmp_path / "live"),
                                  "--server-name", "www.example.com")
    assert code == 0
    assert "ssl" not in directives(out)
    assert "return 301" not in out
    assert "location ^~ /.well-known/acme-challenge/ {" in out
    assert "server_name www.example.com;" in out
    live = tmp_path / "live" / "shop.example.com"
    assert err.startswith(f"relman: warning: no certificate at {live} yet")
    assert "certbot certonly --webroot -w /var/www/letsencrypt -d shop.example.com" in err

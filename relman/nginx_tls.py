"""The public-server side of `relman nginx-config`: TLS, the 80 -> 443 redirect, IPv6 and
the body size, checked here and rendered as lines for the server block."""

from __future__ import annotations

import errno
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from relman.errors import UsageError

# certbot's defaults: `certbot certonly --webroot -w ACME_WEBROOT -d DOMAIN` writes
# LETSENCRYPT_LIVE/DOMAIN/{fullchain,privkey}.pem (symlinks into ../../archive/).
LETSENCRYPT_LIVE: Final = Path("/etc/letsencrypt/live")
ACME_WEBROOT: Final = Path("/var/www/letsencrypt")

# nginx 1.25.1 added the `http2` directive and deprecated `listen ... http2` (it still works,
# with a [warn] at every `nginx -t`). Debian 12 ships 1.22.1, which knows only the listen
# parameter, so that is the form for an unknown version: it works everywhere since 1.9.5.
HTTP2_DIRECTIVE_SINCE: Final = (1, 25, 1)

# Mozilla's "intermediate" profile (ssl-config.mozilla.org, guideline 5.7): TLS 1.2 and 1.3,
# forward-secret AEAD ciphers, the client's order. Its DHE suites are left out: nginx uses
# them only with an ssl_dhparam file, which relman does not make.
_CIPHERS: Final = ":".join([
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
])
_SIZE: Final = re.compile(r"[0-9]+[kKmMgG]?")  # nginx's size syntax; 0 means no limit
_DOMAIN: Final = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?")
_VERSION: Final = re.compile(r"(\d+)\.(\d+)\.(\d+)")
# As nginxconf's check: characters that would end or break an unquoted nginx token.
_UNSAFE: Final = re.compile(r"""[;{}"'\\#$\s]""")


@dataclass(frozen=True, slots=True, kw_only=True)
class Tls:
    """Where the certificate and key are, the https listen value, and the http2 form."""

    cert: Path
    key: Path
    listen: str = "443"
    http2_directive: bool = False  # `http2 on;` (nginx >= 1.25.1), else `listen ... http2`


@dataclass(frozen=True, slots=True, kw_only=True)
class Acme:
    """certbot's webroot challenge for *domain*: files under *webroot*, served on plain http."""

    webroot: Path
    domain: str


def parse_version(text: str) -> tuple[int, int, int] | None:
    """(1, 22, 1) from "1.22.1" or from `nginx -v`'s "nginx version: nginx/1.22.1"."""
    found = _VERSION.search(text)
    return (int(found[1]), int(found[2]), int(found[3])) if found else None


def local_nginx_version() -> str | None:
    """What `nginx -v` says (on stderr) on this machine, or None without an nginx."""
    # Imported here: the CLI imports this module at start (its option defaults), over SSH too.
    import shutil
    import subprocess

    binary = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
    if binary is None:
        return None
    done = subprocess.run([binary, "-v"], capture_output=True, text=True, check=False)
    return done.stderr.strip() or None


def wants_http2_directive(version: str | None) -> bool:
    """True if the nginx of *version* takes `http2 on;` (unknown: False, the portable form)."""
    if version is None:
        return False
    parsed = parse_version(version)
    if parsed is None:
        raise UsageError(f"nginx-config: --nginx-version {version!r} is not like 1.22.1")
    return parsed >= HTTP2_DIRECTIVE_SINCE


def check_size(value: str) -> None:
    """Refuse what nginx would not read as a size (client_max_body_size)."""
    if not _SIZE.fullmatch(value):
        raise UsageError(f"nginx-config: --client-max-body-size {value!r} is not an nginx "
                         "size: digits with an optional k, m or g (0 for no limit)")


def _absent(path: Path) -> bool:
    """True if *path* surely does not exist; False if it does or we may not look (a key in
    /etc/ssl/private, 0710 root:ssl-cert, is still readable by nginx's master, root)."""
    try:
        path.stat()
    except PermissionError:
        return False
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ENOTDIR):
            return True
        raise
    return False


def tls_files(cert: str, key: str, *, listen: str, http2_directive: bool) -> Tls:
    """The Tls of --tls CERT KEY: absolute paths nginx can read as one token, that exist."""
    paths = []
    for what, value in (("certificate", cert), ("key", key)):
        path = Path(value)
        if not path.is_absolute() or _UNSAFE.search(value):
            raise UsageError(f"nginx-config: --tls {what} {value!r} must be an absolute path "
                             "without whitespace, quotes, ;, {, }, #, $ or backslash")
        if _absent(path):
            raise UsageError(f"nginx-config: --tls {what} {value} does not exist")
        paths.append(path)
    return Tls(cert=paths[0], key=paths[1], listen=listen, http2_directive=http2_directive)


def letsencrypt_files(domain: str, live: Path) -> tuple[Path, Path]:
    """certbot's fullchain.pem and privkey.pem for *domain* under *live*."""
    if not _DOMAIN.fullmatch(domain):
        raise UsageError(f"nginx-config: --letsencrypt {domain!r} is not a domain name")
    if not live.is_absolute() or _UNSAFE.search(str(live)):
        raise UsageError(f"nginx-config: --letsencrypt-dir {str(live)!r} must be an absolute "
                         "path without whitespace, quotes, ;, {, }, #, $ or backslash")
    return live / domain / "fullchain.pem", live / domain / "privkey.pem"


def choose_tls(*, tls_paths: tuple[str, str] | None, letsencrypt: str | None,
               letsencrypt_dir: str | None, acme_webroot: str | None, listen: str,
               nginx_version: str | None) -> tuple[Tls | None, Acme | None, str]:
    """The Tls and Acme that --tls or --letsencrypt ask for, and a warning if any: before
    certbot has run there is no certificate, and the config must serve its challenge."""
    if tls_paths and letsencrypt:
        raise UsageError("nginx-config: --tls and --letsencrypt cannot be used together")
    if tls_paths:
        return tls_files(*tls_paths, listen=listen,
                         http2_directive=_http2_directive(nginx_version)), None, ""
    if not letsencrypt:
        return None, None, ""
    acme = Acme(webroot=Path(acme_webroot or ACME_WEBROOT), domain=letsencrypt)
    cert, key = letsencrypt_files(letsencrypt, Path(letsencrypt_dir or LETSENCRYPT_LIVE))
    if _absent(cert):
        return None, acme, (
            f"no certificate at {cert.parent} yet: this config serves plain http with the "
            f"ACME location only; run `certbot certonly --webroot -w {acme.webroot} -d "
            f"{letsencrypt}`, then nginx-config again")
    tls = Tls(cert=cert, key=key, listen=listen, http2_directive=_http2_directive(nginx_version))
    return tls, acme, ""


def _http2_directive(nginx_version: str | None) -> bool:
    return wants_http2_directive(nginx_version or local_nginx_version())


def _port(listen: str, option: str) -> str:
    """The port of a listen value such as "80", "127.0.0.1:8080" or "[::1]:80 default_server"."""
    address = listen.split()[0]
    port = address.rpartition(":")[2] if ":" in address else address
    if not port.isdigit():
        raise UsageError(f"nginx-config: {option} {listen!r} has no port, which --ipv6 and "
                         "the https redirect need")
    return port


def listen_lines(listen: str, tls: Tls | None, *, ipv6: bool) -> list[str]:
    """The listen directives: plain http, then https, each also on [::] with *ipv6*."""
    values = [listen]
    if ipv6:
        values.append(f"[::]:{_port(listen, '--listen')}{_options(listen)}")
    if tls is not None:
        ssl = " ssl" if tls.http2_directive else " ssl http2"
        values.append(tls.listen + ssl)
        if ipv6:
            values.append(f"[::]:{_port(tls.listen, '--tls-listen')}{_options(tls.listen)}{ssl}")
    return [f"listen {value};" for value in values]


def _options(listen: str) -> str:
    rest = listen.split()[1:]
    return "".join(f" {word}" for word in rest)


def redirect_map(name: str, *, acme: bool) -> list[str]:
    """The http-level map that says which plain-http requests go to https (1) or stay (0)."""
    acme_line = ['    "~^http \\S+ /\\.well-known/acme-challenge/"  0;'] if acme else []
    return [
        "# Plain http is redirected to https except from loopback: relman's checks",
        "# (health.nginx_url) may stay http://127.0.0.1/, where a 301 would pass them without",
        "# reaching the app. Regular expressions are tried in order; the first match wins.",
        f'map "$scheme $remote_addr $uri" $relman_{name}_to_https {{',
        "    default                                     0;",
        '    "~^http (127\\.0\\.0\\.1|::1) "                0;',
        *acme_line,
        '    "~^http "                                   1;',
        "}",
    ]


def tls_lines(name: str, tls: Tls) -> list[str]:
    """Certificate, Mozilla intermediate settings, and the redirect of plain http."""
    port = _port(tls.listen, "--tls-listen")
    target = "https://$host" + ("" if port == "443" else f":{port}") + "$request_uri"
    return [
        "# TLS as in Mozilla's intermediate profile (ssl-config.mozilla.org).",
        f"ssl_certificate {tls.cert};",
        f"ssl_certificate_key {tls.key};",
        "ssl_protocols TLSv1.2 TLSv1.3;",
        f"ssl_ciphers {_CIPHERS};",
        "ssl_prefer_server_ciphers off;",
        "ssl_session_timeout 1d;",
        "ssl_session_cache shared:relman_tls:10m;",
        "ssl_session_tickets off;",
        *(["http2 on;"] if tls.http2_directive else []),
        "",
        f"if ($relman_{name}_to_https) {{",
        f"    return 301 {target};",
        "}",
    ]


def acme_lines(acme: Acme) -> list[str]:
    """The location certbot's --webroot challenge files are served from, on plain http."""
    webroot = acme.webroot
    if not webroot.is_absolute() or _UNSAFE.search(str(webroot)):
        raise UsageError(f"nginx-config: --acme-webroot {str(webroot)!r} must be an absolute "
                         "path without whitespace, quotes, ;, {, }, #, $ or backslash")
    return [
        "# Where certbot's challenge files are served from, for:",
        f"#   certbot certonly --webroot -w {webroot} -d {acme.domain}",
        "location ^~ /.well-known/acme-challenge/ {",
        f"    root {webroot};",
        "}",
    ]

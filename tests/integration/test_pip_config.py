"""A private package index configured only in pip's config: uv is given it, pip reads it, and
a certificate uv does not trust fails the deploy with the fix named (issue 11, point 3)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from testing.git import release_version
from testing.needs import need
from testing.pyindex import (
    Certificates,
    cached_wheels,
    make_certificates,
    serve_index,
    write_simple_index,
    write_wheel,
)

REQUIREMENTS = "gunicorn==27.0.1\nrelman-test-dep==1.0\n"
# What would point pip or uv elsewhere than the test's pip.conf says, or through a proxy.
NOT_INHERITED = ("PIP_", "UV_INDEX", "UV_DEFAULT_INDEX", "UV_EXTRA_INDEX_URL", "UV_FIND_LINKS",
                 "UV_INSECURE_HOST", "UV_SYSTEM_CERTS", "UV_NATIVE_TLS", "UV_OFFLINE",
                 "SSL_CERT_", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy",
                 "https_proxy", "all_proxy")


@pytest.fixture(scope="module")
def index_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A PEP 503 index holding relman-test-dep 1.0 (made here) and gunicorn (cached once)."""
    root = tmp_path_factory.mktemp("index")
    dep = write_wheel(root / "built", "relman-test-dep", "1.0", 'WHERE = "private index"\n')
    write_simple_index(root, [dep, *cached_wheels("gunicorn==27.0.1")])
    return root


@pytest.fixture
def index_url(index_root: Path) -> Iterator[str]:
    with serve_index(index_root) as url:
        yield url


def start_with_pip_conf(make_app, base_dir: Path, pip_conf: str, **tables):
    """A daemon whose only package settings are *pip_conf*, named by PIP_CONFIG_FILE; the
    machine's global pip.conf files still apply, as they do for pip (none of this test's
    indexes is in them; the user's files give way to PIP_CONFIG_FILE, as in pip)."""
    conf = base_dir / "pip.conf"
    conf.write_text(pip_conf)
    app = make_app(start=False, **tables)
    app.env = {k: v for k, v in app.env.items() if not k.startswith(NOT_INHERITED)}
    app.env.update(PIP_CONFIG_FILE=str(conf), XDG_CONFIG_DIRS=str(base_dir / "no-xdg"))
    return app.start()


def venv_imports(app, module: str) -> str:
    (release,) = [r for r in app.json("releases") if r["live"]]
    python = Path(release["venv"]) / "bin" / "python"
    return subprocess.run([str(python), "-c", f"import {module}; print({module}.WHERE)"],
                          check=True, capture_output=True, text=True).stdout.strip()


@pytest.mark.parametrize("installer", ["auto", "pip"])
def test_a_package_only_pip_conf_names_is_installed(make_app, app_repo, base_dir, index_url,
                                                    installer):
    """With index-url set only in pip.conf (no PyPI), the release's venv gets a package that
    only that index has: from uv, given pip's setting ("auto"), and from pip, reading it."""
    app = start_with_pip_conf(make_app, base_dir, f"[global]\nindex-url = {index_url}\n",
                              build={"installer": installer})
    release_version(app_repo, "v2", extra={"requirements.txt": REQUIREMENTS})
    out = app.relman("deploy", "v2", check=True).stdout
    backend = "uv" if installer == "auto" else "pip"
    assert f"built with {backend}" in out
    carried = f"pip settings carried over to uv: index-url {index_url}"
    assert (carried in out) == (backend == "uv"), out
    assert venv_imports(app, "relman_test_dep") == "private index"


@pytest.fixture
def tls_index(index_root: Path, base_dir: Path) -> Iterator[tuple[str, Certificates]]:
    need(shutil.which("openssl") is not None, "needs openssl (a certificate from a private CA)",
         "install openssl")
    certs = make_certificates(base_dir / "tls")
    with serve_index(index_root, tls=certs) as url:
        yield url, certs


@pytest.mark.parametrize("fix", ["cert", "trusted-host"])
def test_an_untrusted_index_certificate_names_the_fix(make_app, app_repo, base_dir, tls_index,
                                                      fix):
    """An HTTPS index whose CA uv does not trust fails the deploy with uv's own words and the
    fixes named; pip.conf's cert = that CA (or trusted-host = the index), carried over to
    uv, makes the same deploy work."""
    url, certs = tls_index
    app = start_with_pip_conf(make_app, base_dir, f"[global]\nindex-url = {url}\n")
    release_version(app_repo, "v2", extra={"requirements.txt": REQUIREMENTS})
    failed = app.relman("deploy", "v2")
    assert failed.returncode == 1, failed.stderr
    first = failed.stderr.splitlines()[0]
    assert first.startswith("relman: error: installing dependencies failed (uv exit"), first
    assert "uv does not trust the package index's TLS certificate" in first
    assert 'installer = "pip"' in first
    assert "UnknownIssuer" in failed.stderr
    assert "hint: " in failed.stderr
    assert "UV_SYSTEM_CERTS=true" in failed.stderr

    setting = f"cert = {certs.ca}" if fix == "cert" else f"trusted-host = {urlsplit(url).netloc}"
    (base_dir / "pip.conf").write_text(f"[global]\nindex-url = {url}\n{setting}\n")
    out = app.relman("deploy", "v2", check=True).stdout
    assert f"pip settings carried over to uv: index-url {url}, {fix}" in out
    assert venv_imports(app, "relman_test_dep") == "private index"

"""pip's settings read as pip reads them, and what uv is given for them (pip_config)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from relman.errors import BuildFailed
from relman.releases import pip_config, venvs
from relman.releases.pip_config import (
    PipConfigError,
    UvSettings,
    pip_config_files,
    pip_options,
    uv_failure,
    uv_settings,
)

HOME = {"HOME": "/home/deploy"}
USER_FILES = ["/home/deploy/.pip/pip.conf", "/home/deploy/.config/pip/pip.conf"]


@pytest.mark.parametrize(("env", "exists", "expected"), [
    (HOME, False, ["/etc/xdg/pip/pip.conf", "/etc/pip.conf", *USER_FILES]),
    ({**HOME, "XDG_CONFIG_DIRS": "/a:/b"}, False,
     ["/a/pip/pip.conf", "/b/pip/pip.conf", "/etc/pip.conf", *USER_FILES]),
    ({**HOME, "XDG_CONFIG_HOME": "/cfg"}, False,
     ["/etc/xdg/pip/pip.conf", "/etc/pip.conf", "/home/deploy/.pip/pip.conf",
      "/cfg/pip/pip.conf"]),
    # A PIP_CONFIG_FILE that exists replaces the user's files, not the global ones.
    ({**HOME, "PIP_CONFIG_FILE": "/srv/pip.conf"}, True,
     ["/etc/xdg/pip/pip.conf", "/etc/pip.conf", "/srv/pip.conf"]),
    ({**HOME, "PIP_CONFIG_FILE": "/srv/pip.conf"}, False,
     ["/etc/xdg/pip/pip.conf", "/etc/pip.conf", *USER_FILES, "/srv/pip.conf"]),
    ({**HOME, "PIP_CONFIG_FILE": "/dev/null"}, True, []),
], ids=["default", "xdg-config-dirs", "xdg-config-home", "config-file", "config-file-missing",
        "devnull"])
def test_files_are_pips_in_its_order(env, exists, expected):
    """The files are the ones pip 23-25 reads for that environment, lowest priority first."""
    assert pip_config_files(env, exists=lambda _: exists) == expected


GLOBAL_A = "[global]\nindex-url = https://a.example/simple\n"
GLOBAL_B = "[global]\nindex-url = https://b.example/simple\n"
INSTALL_A = "[install]\nindex-url = https://a.example/simple\n"


@pytest.mark.parametrize(("texts", "env", "expected"), [
    ([("/etc/pip.conf", GLOBAL_A)], {}, "https://a.example/simple"),
    ([("/etc/pip.conf", GLOBAL_A), ("user", GLOBAL_B)], {}, "https://b.example/simple"),
    # [install] beats [global] whichever file each is in.
    ([("/etc/pip.conf", INSTALL_A), ("user", GLOBAL_B)], {}, "https://a.example/simple"),
    ([("/etc/pip.conf", GLOBAL_A)], {"PIP_INDEX_URL": "https://env.example/simple"},
     "https://env.example/simple"),
    # An empty value in a later file erases the earlier one, then is ignored: PyPI.
    ([("/etc/pip.conf", GLOBAL_A), ("user", "[global]\nindex-url =\n")], {}, None),
    # ... but an empty [install] value leaves [global]'s.
    ([("/etc/pip.conf", GLOBAL_A + "[install]\nindex-url =\n")], {},
     "https://a.example/simple"),
    ([("/etc/pip.conf", "[global]\nINDEX_URL = https://u.example/simple\n")], {},
     "https://u.example/simple"),
    ([("/etc/pip.conf", "[freeze]\nindex-url = https://f.example/simple\n")], {}, None),
], ids=["one", "later-file", "install-section", "env", "empty-erases", "empty-install",
        "underscores", "other-section"])
def test_index_url_wins_as_in_pip(texts, env, expected):
    """Which index-url pip uses follows pip's order of files, sections and variables."""
    assert pip_options(texts, env).get("index-url") == expected


def test_default_timeout_variable_is_the_timeout_option():
    """PIP_DEFAULT_TIMEOUT is pip's --default-timeout, another name of --timeout."""
    assert pip_options([], {"PIP_DEFAULT_TIMEOUT": "180"}) == {"timeout": "180"}


def test_a_file_pip_refuses_is_an_error():
    """A file without a section header fails to load, in pip and here, naming the file."""
    with pytest.raises(PipConfigError, match=re.escape("/etc/pip.conf")):
        pip_options([("/etc/pip.conf", "index-url = https://x.example/\n")], {})


URL = "https://pkgs.example/simple"


@pytest.mark.parametrize(("options", "env", "expected_env", "args"), [
    ({"index-url": URL}, {}, {"UV_INDEX_URL": URL}, ()),
    ({"extra-index-url": f"{URL}\n  https://two.example/simple"}, {},
     {"UV_EXTRA_INDEX_URL": f"{URL} https://two.example/simple",
      "UV_INDEX_STRATEGY": "unsafe-best-match"}, ()),
    ({"extra-index-url": URL}, {"UV_INDEX_STRATEGY": "first-index"},
     {"UV_EXTRA_INDEX_URL": URL}, ()),
    ({"find-links": "/opt/wheels file:///srv/wheels"}, {},
     {"UV_FIND_LINKS": "/opt/wheels,file:///srv/wheels"}, ()),
    ({"trusted-host": "pkgs.example\nmirror:8080"}, {},
     {"UV_INSECURE_HOST": "pkgs.example mirror:8080"}, ()),
    ({"cert": "/etc/ssl/proxy-ca.pem"}, {}, {"SSL_CERT_FILE": "/etc/ssl/proxy-ca.pem"}, ()),
    ({"client-cert": "/etc/ssl/me.pem"}, {}, {"SSL_CLIENT_CERT": "/etc/ssl/me.pem"}, ()),
    ({"proxy": "http://proxy:3128"}, {},
     {"HTTPS_PROXY": "http://proxy:3128", "HTTP_PROXY": "http://proxy:3128"}, ()),
    ({"constraint": "c1.txt c2.txt"}, {}, {"UV_CONSTRAINT": "c1.txt c2.txt"}, ()),
    ({"timeout": "15.4"}, {}, {"UV_HTTP_TIMEOUT": "15"}, ()),
    ({"timeout": "soon"}, {}, {}, ()),
    ({"no-index": "yes"}, {}, {}, ("--no-index",)),
    ({"no-index": "false"}, {}, {}, ()),
    ({"pre": "true", "user": "1"}, {}, {}, ()),
    # What the unit's environment already says for uv wins.
    ({"index-url": URL}, {"UV_DEFAULT_INDEX": "https://mine/simple"}, {}, ()),
    ({"cert": "/ca.pem"}, {"UV_SYSTEM_CERTS": "true"}, {}, ()),
    ({"cert": "/ca.pem"}, {"SSL_CERT_FILE": "/other.pem"}, {}, ()),
    ({"proxy": "http://proxy:3128"}, {"https_proxy": "http://mine:3128"}, {}, ()),
], ids=["index-url", "extra-index-url", "extra-strategy-set", "find-links", "trusted-host",
        "cert", "client-cert", "proxy", "constraint", "timeout", "timeout-bad", "no-index",
        "no-index-false", "not-carried", "uv-index-set", "system-certs-set", "ssl-cert-set",
        "proxy-set"])
def test_pip_options_become_uv_settings(options, env, expected_env, args):
    """Each pip option becomes the uv variable (or argument) that says the same."""
    settings = uv_settings(options, env)
    assert dict(settings.env) == expected_env
    assert settings.args == args


def test_overridden_options_are_named():
    """Options a uv variable already decides are listed apart from those carried."""
    settings = uv_settings({"index-url": URL, "cert": "/ca.pem"},
                           {"UV_INDEX_URL": "https://mine/simple"})
    assert settings.carried == ("cert",)
    assert settings.overridden == ("index-url",)


def test_without_pip_config_uv_gets_nothing():
    """PIP_CONFIG_FILE=/dev/null and no PIP_* variable: uv is given no index, so a package
    that only a pip-configured index has is not found by uv (what the carry-over fixes)."""
    env = {**HOME, "PIP_CONFIG_FILE": "/dev/null"}
    assert pip_config_files(env) == []
    settings = uv_settings(pip_options([], env), env)
    assert settings == UvSettings({})


def test_read_pip_options_reads_the_files(tmp_path: Path):
    """read_pip_options() reads the file PIP_CONFIG_FILE names from disk."""
    conf = tmp_path / "pip.conf"
    conf.write_text(f"[global]\nindex-url = {URL}\n")
    env = {"HOME": str(tmp_path), "XDG_CONFIG_DIRS": str(tmp_path / "none"),
           "PIP_CONFIG_FILE": str(conf)}
    assert pip_config.read_pip_options(env)["index-url"] == URL


def test_an_unreadable_file_fails_the_build(tmp_path: Path):
    """A pip.conf that cannot be decoded fails the build with a message naming it."""
    conf = tmp_path / "pip.conf"
    conf.write_bytes(b"[global]\nindex-url = \xff\n")
    env = {"HOME": str(tmp_path), "PIP_CONFIG_FILE": str(conf)}
    backend = venvs.UvBackend("uv")
    with pytest.raises(BuildFailed, match=re.escape(f"pip configuration: {conf}: cannot read")):
        venvs.carry_pip_config(backend, env, None)


def test_description_hides_credentials():
    """The deploy's line names what was carried, and index URLs without their password."""
    settings = uv_settings({"index-url": "https://bot:s3cret@pkgs.example/simple",
                            "cert": "/ca.pem"}, {})
    line = pip_config.describe(settings)
    assert "s3cret" not in line
    assert line == ("pip settings carried over to uv: index-url https://***@pkgs.example/simple,"
                    " cert")


# uv 0.13.9's own words, captured from failing runs against a local index (a TLS one with a
# certificate from a private CA; a port nothing listens on; a plain one without the package).
UV_TLS = """\
Using Python 3.11.2 environment at: v1
error: Failed to fetch: https://127.0.0.1:41235/simple/relman-test-dep/
  cause: error sending request for url (https://127.0.0.1:41235/simple/relman-test-dep/)
  cause: client error (Connect)
  cause: invalid peer certificate: UnknownIssuer

hint: Consider enabling use of system TLS certificates with the `--system-certs` \
command-line flag"""
UV_REFUSED = """\
Using Python 3.11.2 environment at: v1
error: Request failed after 3 retries in 11.5s
  cause: Failed to fetch: http://127.0.0.1:41299/simple/relman-test-dep/
  cause: error sending request for url (http://127.0.0.1:41299/simple/relman-test-dep/)
  cause: client error (Connect)
  cause: tcp connect error
  cause: Connection refused (os error 111)"""
UV_NOT_FOUND = """\
Using Python 3.11.2 environment at: v1
error: No solution found when resolving dependencies
  cause: Because relman-test-dep was not found in the package registry and you require \
relman-test-dep, we can conclude that your requirements are unsatisfiable."""


def test_tls_failure_names_the_fix():
    """uv refusing a certificate gives a reason naming the fixes, and a hint."""
    why = uv_failure(UV_TLS, UvSettings({}))
    assert why is not None
    reason, hint = why
    assert "TLS certificate" in reason
    assert 'installer = "pip"' in reason
    assert "UV_SYSTEM_CERTS=true" in hint
    assert "SSL_CERT_FILE" in hint


def test_unreachable_pip_index_names_the_fix():
    """uv failing to reach the index pip's config names says so; another host does not."""
    carried = uv_settings({"index-url": "http://127.0.0.1:41299/simple/"}, {})
    why = uv_failure(UV_REFUSED, carried)
    assert why is not None
    assert "127.0.0.1" in why[0]
    assert 'installer = "pip"' in why[0]
    assert uv_failure(UV_REFUSED, uv_settings({"index-url": "http://other/simple/"}, {})) is None


def test_other_failures_get_no_hint():
    """A package that no index has is not a TLS or network problem."""
    assert uv_failure(UV_NOT_FOUND, uv_settings({"index-url": URL}, {})) is None


@pytest.mark.parametrize(("installer", "expected"), [("pip", "pip"), ("auto", "uv"),
                                                     ("uv", "uv")])
def test_installer_chooses_the_backend(installer, expected):
    """build.installer picks the backend (uv is a dependency of relman: it is installed)."""
    assert venvs.choose_backend(installer).name == expected


def test_installer_uv_without_uv_fails(monkeypatch: pytest.MonkeyPatch):
    """installer = "uv" where uv cannot be found fails the build; "auto" falls back to pip."""
    monkeypatch.setattr(venvs, "find_uv", lambda: None)
    with pytest.raises(BuildFailed, match='installer = "uv" but uv is not installed'):
        venvs.choose_backend("uv")
    assert venvs.choose_backend("auto").name == "pip"


def test_carrying_logs_names_and_hides_credentials(tmp_path: Path):
    """The event names what was carried and the variables set; an index's password is
    hidden, and no value but the redacted index URLs is logged."""
    conf = tmp_path / "pip.conf"
    conf.write_text("[global]\nindex-url = https://bot:s3cret@pkgs.example/simple\n"
                    "client-cert = /etc/ssl/private/me.pem\n")
    env = {"HOME": str(tmp_path), "XDG_CONFIG_DIRS": str(tmp_path / "none"),
           "PIP_CONFIG_FILE": str(conf), "UV_CONSTRAINT": "c.txt", "PIP_CONSTRAINT": "p.txt"}
    lines: list[str] = []
    with capture_logs() as logs:
        backend, uv_env, _ = venvs.carry_pip_config(venvs.UvBackend("uv"), env, lines.append)
    (event,) = [e for e in logs if e["event"] == "pip_settings.carried"]
    # (/etc/pip.conf, read as pip reads it, may add settings of the machine's own.)
    assert {"index-url", "client-cert"} <= set(event["carried"])
    assert "constraint" in event["overridden"]
    assert {"SSL_CLIENT_CERT", "UV_INDEX_URL"} <= set(event["env_keys"])
    assert event["indexes"] == ["https://***@pkgs.example/simple"]
    assert "s3cret" not in repr(logs) + "".join(lines)
    assert uv_env["UV_INDEX_URL"] == "https://bot:s3cret@pkgs.example/simple"  # uv needs it
    assert backend.args == ()

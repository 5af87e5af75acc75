"""The machine's pip settings (pip.conf files, PIP_* variables), read as pip reads them and
carried over to uv, which reads neither (uv's "Compatibility with pip" page).

Behind a TLS-intercepting proxy or with a private index, pip works from its configuration
while uv, left alone, fails (`invalid peer certificate: UnknownIssuer`, or a package "not
found"). The order is pip's own (pip 23-25, src/pip/_internal/configuration.py and
cli/parser.py):
- files, lowest priority first: $XDG_CONFIG_DIRS/pip/pip.conf (default /etc/xdg), then
  /etc/pip.conf; ~/.pip/pip.conf, then $XDG_CONFIG_HOME/pip/pip.conf (skipped when
  PIP_CONFIG_FILE names a file that exists); then PIP_CONFIG_FILE. PIP_CONFIG_FILE=/dev/null
  loads no file at all. The site file (sys.prefix/pip.conf) is the new venv's own: none.
- a later file wins for the same section and name; then, by section, [global] is overridden
  by [install], which is overridden by the PIP_* variables; empty values are ignored.
Nothing here does I/O but read_pip_options(); the rest are pure functions of text and env.
"""

from __future__ import annotations

import configparser
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from relman.redact import redact_url

DEVNULL: Final = os.devnull
# pip's option names that mean the same option (config files take long names only).
_ALIASES: Final = {"default-timeout": "timeout"}
_TRUE: Final = frozenset({"y", "yes", "t", "true", "on", "1"})
_FALSE: Final = frozenset({"n", "no", "f", "false", "off", "0"})


class PipConfigError(Exception):
    """A pip configuration file that pip itself would refuse to load."""


def pip_config_files(env: Mapping[str, str],
                     exists: Callable[[str], bool] = os.path.exists) -> list[str]:
    """The files pip reads with *env*, lowest priority first."""
    named = env.get("PIP_CONFIG_FILE")
    if named == DEVNULL:
        return []
    home = env.get("HOME") or os.path.expanduser("~")
    dirs = (env.get("XDG_CONFIG_DIRS") or "").strip() or "/etc/xdg"
    files = [os.path.join(os.path.expanduser(d), "pip", "pip.conf") for d in dirs.split(":")]
    files.append("/etc/pip.conf")
    if not (named and exists(named)):
        config_home = (env.get("XDG_CONFIG_HOME") or "").strip() or os.path.join(home, ".config")
        files += [os.path.join(home, ".pip", "pip.conf"),
                  os.path.join(config_home, "pip", "pip.conf")]
    if named:
        files.append(named)
    return files


def _name(raw: str) -> str:
    name = raw.lower().replace("_", "-").removeprefix("--")
    return _ALIASES.get(name, name)


def pip_options(texts: Sequence[tuple[str, str]], env: Mapping[str, str]) -> dict[str, str]:
    """The options pip's install command takes from *texts* ((file name, text), lowest
    priority first) and the PIP_* variables of *env*: {"index-url": "https://..."}."""
    merged: dict[tuple[str, str], str] = {}
    for source, text in texts:
        parser = configparser.RawConfigParser()
        try:
            parser.read_string(text, source)
        except configparser.Error as e:
            raise PipConfigError(f"{source}: {' '.join(str(e).split())}") from None
        for section in parser.sections():
            for raw, value in parser.items(section):
                merged[section, _name(raw)] = value
    for key, value in env.items():
        if key.startswith("PIP_") and key[4:].lower() not in ("version", "help"):
            merged[":env:", _name(key[4:])] = value
    options: dict[str, str] = {}
    for wanted in ("global", "install", ":env:"):
        options.update({name: value for (section, name), value in merged.items()
                        if section == wanted and value})
    return options


def _flag(value: str) -> bool | None:
    lowered = value.strip().lower()
    return True if lowered in _TRUE else False if lowered in _FALSE else None


def _timeout(value: str) -> str | None:
    try:
        seconds = float(value)
    except ValueError:
        return None
    return str(max(1, round(seconds))) if seconds > 0 else None


# pip option -> (the variables that already say it for uv, so the pip one is not carried;
# the variable it becomes; its value for uv, or None when pip would not use it either).
# Names checked against uv's EnvVars (crates/uv-static/src/env_vars.rs) and `uv pip install
# --help` of uv 0.13. uv has no variable for --no-index: it goes on the command line.
_CARRIED: Final[dict[str, tuple[tuple[str, ...], str, Callable[[str], str | None]]]] = {
    "index-url": (("UV_INDEX_URL", "UV_DEFAULT_INDEX"), "UV_INDEX_URL", str.strip),
    "extra-index-url": (("UV_EXTRA_INDEX_URL", "UV_INDEX"), "UV_EXTRA_INDEX_URL",
                        lambda v: " ".join(v.split())),
    "find-links": (("UV_FIND_LINKS",), "UV_FIND_LINKS", lambda v: ",".join(v.split())),
    "trusted-host": (("UV_INSECURE_HOST",), "UV_INSECURE_HOST", lambda v: " ".join(v.split())),
    "cert": (("SSL_CERT_FILE", "SSL_CERT_DIR", "UV_SYSTEM_CERTS", "UV_NATIVE_TLS"),
             "SSL_CERT_FILE", str.strip),
    "client-cert": (("SSL_CLIENT_CERT",), "SSL_CLIENT_CERT", str.strip),
    "constraint": (("UV_CONSTRAINT",), "UV_CONSTRAINT", lambda v: " ".join(v.split())),
    "timeout": (("UV_HTTP_TIMEOUT", "UV_REQUEST_TIMEOUT", "HTTP_TIMEOUT"), "UV_HTTP_TIMEOUT",
                _timeout),
}
# pip's --proxy serves both schemes (pip's session sets it for http and https).
_PROXY_VARS: Final = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy",
                      "ALL_PROXY", "all_proxy")


@dataclass(frozen=True, slots=True)
class UvSettings:
    """What uv needs to install as pip would on this machine."""
    env: Mapping[str, str]          # variables to add to uv's environment
    args: tuple[str, ...] = ()      # arguments for `uv pip install`
    carried: tuple[str, ...] = ()   # the pip option names carried over
    overridden: tuple[str, ...] = ()  # pip options that a variable uv reads already decides

    def indexes(self) -> list[str]:
        """The index URLs carried (with any credentials in them)."""
        return [*self.env.get("UV_INDEX_URL", "").split(),
                *self.env.get("UV_EXTRA_INDEX_URL", "").split()]


def uv_settings(options: Mapping[str, str], env: Mapping[str, str]) -> UvSettings:
    """The uv variables and arguments that say what pip *options* say. A variable uv reads
    that *env* already sets wins: the unit's environment is explicit for uv."""
    out: dict[str, str] = {}
    carried: list[str] = []
    overridden: list[str] = []
    args: list[str] = []
    for option, (already, variable, convert) in _CARRIED.items():
        if option not in options:
            continue
        value = convert(options[option])
        if not value:
            continue
        if any(env.get(name) for name in already):
            overridden.append(option)
            continue
        out[variable] = value
        carried.append(option)
    if "proxy" in options and options["proxy"].strip():
        if any(env.get(name) for name in _PROXY_VARS):
            overridden.append("proxy")
        else:
            out["HTTPS_PROXY"] = out["HTTP_PROXY"] = options["proxy"].strip()
            carried.append("proxy")
    if _flag(options.get("no-index", "")):
        args.append("--no-index")
        carried.append("no-index")
    # pip picks the best version over all its indexes; uv by default stops at the first
    # index that has the package, so an extra index holding an old copy of a package hides
    # PyPI's (seen on a build host whose pip.conf names a local mirror: "gunicorn was found
    # on file:///opt/pypi/simple, but not at the requested version", where pip installed it).
    # unsafe-best-match is pip's behaviour (uv's compatibility page, "Packages that exist on
    # multiple indexes").
    if "UV_EXTRA_INDEX_URL" in out and not env.get("UV_INDEX_STRATEGY"):
        out["UV_INDEX_STRATEGY"] = "unsafe-best-match"
    return UvSettings(out, tuple(args), tuple(carried), tuple(overridden))


def describe(settings: UvSettings) -> str:
    """One line for the deploy's output: what was carried, URLs without credentials."""
    parts = []
    for option in settings.carried:
        if option in ("index-url", "extra-index-url"):
            variable = "UV_INDEX_URL" if option == "index-url" else "UV_EXTRA_INDEX_URL"
            parts.append(f"{option} {redact_url(settings.env[variable])}")
        else:
            parts.append(option)
    return "pip settings carried over to uv: " + ", ".join(parts)


def read_pip_options(env: Mapping[str, str]) -> dict[str, str]:
    """pip_options() of the files pip_config_files() names, read from disk; a file that
    cannot be read or parsed is a PipConfigError, as it is for pip."""
    texts = []
    for name in pip_config_files(env):
        try:
            texts.append((name, Path(name).read_text(encoding="utf-8")))
        except FileNotFoundError:
            continue
        except (OSError, UnicodeDecodeError) as e:
            reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            raise PipConfigError(f"{name}: cannot read: {reason}") from None
    return pip_options(texts, env)


# What uv prints when it does not trust a server's certificate (rustls: "invalid peer
# certificate: UnknownIssuer"; older builds and other stacks: "certificate verify failed").
_TLS_SIGNS: Final = ("invalid peer certificate", "unknownissuer", "certificate verify failed",
                     "self-signed certificate", "self signed certificate",
                     "unable to get local issuer certificate", "invalid certificate")
# No HTTP answer at all (an HTTP error status is the index's answer, not a network problem).
_UNREACHABLE_SIGNS: Final = ("error sending request", "could not connect", "connection refused",
                             "dns error", "tcp connect error", "operation timed out",
                             "network is unreachable")
SYSTEM_CERTS_HINT: Final = (
    "uv uses its own CA roots, not the system's nor pip's: set UV_SYSTEM_CERTS=true "
    "(uv before 0.11: UV_NATIVE_TLS=true) or SSL_CERT_FILE=/path/to/ca.pem in the unit's "
    'environment (systemctl edit relman@APP), or [build] installer = "pip"')


def uv_failure(tail: str, settings: UvSettings) -> tuple[str, str] | None:
    """(reason, hint) when uv's output *tail* shows a failure that pip, configured on this
    machine, may not have: an untrusted TLS certificate, or an index pip's config names
    that uv could not reach. None for any other failure (a missing package, a bad pin)."""
    lowered = tail.lower()
    if any(sign in lowered for sign in _TLS_SIGNS):
        return ("uv does not trust the package index's TLS certificate "
                '(set UV_SYSTEM_CERTS or SSL_CERT_FILE, or [build] installer = "pip")',
                SYSTEM_CERTS_HINT)
    hosts = {urlsplit(url).hostname for url in settings.indexes()} - {None, ""}
    named = [h for h in hosts if h and h.lower() in lowered]
    if named and any(sign in lowered for sign in _UNREACHABLE_SIGNS):
        return (f"uv could not reach the index pip's configuration names ({sorted(named)[0]}) "
                '(check the proxy and certificates for uv, or set [build] installer = "pip")',
                "pip's proxy setting, if any, reached uv as HTTPS_PROXY: check that the "
                "daemon's user reaches the index (`pip download --no-deps PACKAGE` as that "
                "user), or set [build] installer = \"pip\"")
    return None

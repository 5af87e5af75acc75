"""Render the nginx server block that routes an app's live and preview sockets."""

from __future__ import annotations

import re
from collections.abc import Iterable
from importlib.resources import files
from pathlib import Path
from string import Template
from typing import Final

from relman.errors import UsageError
from relman.nginx_tls import (
    Acme,
    Tls,
    acme_lines,
    check_size,
    listen_lines,
    redirect_map,
    tls_lines,
)
from relman.static_urls import prefix_problem, static_name

PROTOCOLS: Final = frozenset({"http", "uwsgi"})

# The name becomes part of upstream and variable names ($relman_<name>_upstream), and nginx
# variable names end at the first character outside [A-Za-z0-9_]. relman.toml allows "-" in
# app.name, so it becomes "_". Two apps whose names differ only there would then define the
# same upstream twice, which `nginx -t` reports ("duplicate upstream").
_NAME: Final = re.compile(r"[A-Za-z0-9_]+")
# Characters that would end or break an nginx token or directive if substituted unquoted.
_UNSAFE: Final = re.compile(r"""[;{}"'\\#$\s]""")


def _check(field: str, value: str, *, spaces: bool = False) -> None:
    unsafe = _UNSAFE.search(value.replace(" ", "") if spaces else value)
    if not value or unsafe:
        raise UsageError(
            f"nginx-config: {field} {value!r} is empty or has a character nginx "
            "would misread (whitespace, quote, ;, {, }, #, $ or backslash)"
        )


# A file name that carries a content hash, ahead of its extension(s):
# - ".<hex>" or "-<hex>", 8 or more hex digits with at least one digit and one letter:
#   Django's ManifestStaticFilesStorage (`base.27e20196a850.css`, 12), webpack's
#   `[name].[contenthash]` (20), Vite up to 4 and Parcel (`index-4f3a2b1c.js`, 8);
# - "-<8 url-safe base64>" with a digit, an upper and a lower case letter: Rollup 4 and
#   Vite 5+ (`index-Bw9IXxrK.js`; Rollup's default hashCharacters is "base64"); the
#   quarter of those hashes without a digit are missed (revalidated, never stale).
# The letter/digit requirements keep words and dates out ("-settings", "-20241129"): a
# name taken for hashed when it is not would be cached for a year under a name whose
# content a deploy can change; a hash missed is only revalidated.
HASHED_NAME: Final = (
    r"(?:[.-](?=[0-9a-f]*[0-9])(?=[0-9a-f]*[a-f])[0-9a-f]{8,}"
    r"|-(?=[A-Za-z0-9_-]{0,7}[0-9])(?=[A-Za-z0-9_-]{0,7}[A-Z])(?=[A-Za-z0-9_-]{0,7}[a-z])"
    r"[A-Za-z0-9_-]{8})(?:\.[A-Za-z0-9]+)+"
)
IMMUTABLE: Final = "public, max-age=31536000, immutable"

_STATIC_LOCATION: Final = """\
# [static] "{prefix}": the kept releases' files, published before each switch (see
# relman.toml(5)). ^~: no regex location of the server takes these URIs. Location and
# alias both end with "/", so "{stem}../" cannot leave the directory. A name with a
# content hash never changes: cached for a year; any other is revalidated each time.
# An add_header here hides the server level's add_header lines: repeat them here.
location ^~ {prefix} {{
    alias {root}/static/{name}/;
    add_header Cache-Control "no-cache";
    # In a regex location, alias is the whole path: hence the named capture.
    location ~ "^{prefix}(?<relman_static_file>.+{hashed})$" {{
        alias {root}/static/{name}/$relman_static_file;
        add_header Cache-Control "{immutable}";
    }}
}}

"""


def static_locations(root: Path, prefixes: Iterable[str]) -> list[str]:
    """The lines of the `location` blocks serving *root*'s static/<name>/ directories, one
    per [static] prefix, for inside the server block (none without prefixes)."""
    lines = []
    for prefix in prefixes:
        problem = prefix_problem(prefix)
        if problem:
            raise UsageError(f"nginx-config: static prefix {prefix!r}: {problem}")
        lines += _STATIC_LOCATION.format(
            prefix=prefix, stem=prefix.rstrip("/"), root=root, name=static_name(prefix),
            hashed=HASHED_NAME, immutable=IMMUTABLE).splitlines()
    return lines


def _check_port(field: str, listen: str) -> None:
    """A listen value whose port is a number (`80`, `127.0.0.1:-1`, `[::]:99999 ssl`) has one
    from 1 to 65535; a unix: path or a host name is nginx's to judge."""
    address = listen.split()[0]
    if address.startswith("unix:"):
        return
    port = address.rpartition("]")[2].rpartition(":")[2] if ":" in address else address
    if re.fullmatch(r"[-+]?\d+", port) and not 1 <= int(port) <= 65535:
        raise UsageError(f"nginx-config: {field} {listen!r}: the port must be from 1 to 65535")


def _fill_blocks(text: str, blocks: dict[str, list[str]]) -> str:
    """Replace each line that is only `$block` by the block's lines at that indentation (no
    line if empty). Block lines are literal nginx text: their `$` are escaped for Template."""
    out = []
    for line in text.splitlines(keepends=True):
        word = line.strip()
        if word.startswith("$") and word[1:] in blocks:
            indent = line[: len(line) - len(line.lstrip())]
            out += [f"{indent}{b}\n".replace("$", "$$") if b else "\n"
                    for b in blocks[word[1:]]]
        else:
            out.append(line)
    return "".join(out)


def render_server_block(
    *, name: str, root: Path, protocol: str, listen: str = "80", server_name: str = "_",
    tls: Tls | None = None, acme: Acme | None = None, ipv6: bool = False,
    client_max_body_size: str = "", static: Iterable[str] = (),
) -> str:
    """Return the upstreams, map and server block for one app, to include inside http {}.

    With *tls*, the same server block also listens with ssl and redirects plain http to
    https (except from loopback and for the ACME challenge); *acme* adds certbot's
    challenge location; *static* ([static] prefixes) a location per prefix.
    """
    if protocol not in PROTOCOLS:
        raise UsageError(f"nginx-config: protocol {protocol!r} is not one of http, uwsgi")
    ident = name.replace("-", "_")
    if not _NAME.fullmatch(ident):
        raise UsageError(
            f"nginx-config: name {name!r} must be letters, digits, '-' and '_' "
            "(it names nginx upstreams and variables)"
        )
    if not root.is_absolute():
        raise UsageError(f"nginx-config: root {str(root)!r} must be an absolute path")
    _check("root", str(root))
    _check("listen", listen, spaces=True)  # e.g. "80 default_server"
    _check_port("listen", listen)
    _check("server_name", server_name, spaces=True)  # several names are space-separated
    if tls is not None:
        _check("tls listen", tls.listen, spaces=True)
        _check_port("tls listen", tls.listen)
    settings = []
    if client_max_body_size:
        check_size(client_max_body_size)
        settings.append(f"client_max_body_size {client_max_body_size};")
    if tls is not None:
        settings += ["", *tls_lines(ident, tls)]
    if acme is not None:
        settings += ["", *acme_lines(acme)]
    blocks = {
        "listens": listen_lines(listen, tls, ipv6=ipv6),
        "redirect_map": ["", *redirect_map(ident, acme=acme is not None)] if tls else [],
        "server_settings": settings,
        "static_locations": static_locations(root, static),
    }
    text = (files("relman") / "templates" / f"nginx-{protocol}.conf").read_text(encoding="utf-8")
    return Template(_fill_blocks(text, blocks)).substitute(
        name=ident, root=str(root), server_name=server_name
    )

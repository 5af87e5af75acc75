"""[static] URL prefixes: what one may be, and the directory name under <root>/static/ that
each is published to.

The name is the prefix's path segments joined by "-" ("/static/" -> "static",
"/assets/img/" -> "assets-img"): readable in `ls`, the same on every host and in every
release, and safe as one path component. Two prefixes can give one name ("/a-b/" and
"/a/b/"); the config refuses the second rather than publishing both into one directory.
Segments are limited to URL characters that need no escaping in an nginx `location`
or in a path, and may not start with "." (no "." or "..", no hidden directory), so no
name can be ".tmp", where publication stages its links (relman.releases.static).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

from relman.config_values import relative

PREFIX_RE: Final = re.compile(r"/(?:[A-Za-z0-9_~-][A-Za-z0-9._~-]*/)+")


def static_name(prefix: str) -> str:
    """The directory under <root>/static/ of a valid *prefix*: its segments joined by "-"."""
    return "-".join(prefix.strip("/").split("/"))


def prefix_problem(prefix: str) -> str | None:
    """Why *prefix* cannot be a [static] key, if it cannot."""
    if prefix == "/":
        return 'must not be "/": the app itself answers there'
    if not prefix.startswith("/") or not prefix.endswith("/"):
        return 'a URL prefix must start and end with "/", like "/static/"'
    if not PREFIX_RE.fullmatch(prefix):
        return ("each segment of a URL prefix is letters, digits and - _ . ~, "
                "not starting with a dot")
    return None


def directory_problem(directory: str) -> str | None:
    """Why *directory* cannot be a [static] value (a directory of the release tree)."""
    return relative(directory)


def collision(prefixes: Mapping[str, object], prefix: str) -> str | None:
    """The prefix among *prefixes* (before *prefix*) that has *prefix*'s name, if any."""
    name = static_name(prefix)
    for other in prefixes:
        if other == prefix:
            return None
        if static_name(other) == name:
            return other
    return None

"""Credentials out of URLs, in everything relman prints, logs or records. Leaf module.

`app.repo` may carry a token (`https://ci:TOKEN@git.example.com/shop.git`): git needs it, the
CI client, history.jsonl and the logs never do. git itself hides it in its own messages
(git 2.39 prints `unable to access 'https://git.example.com/...'`), but relman's messages,
the logged command lines and whatever a remote echoes are relman's to clean.
"""

from __future__ import annotations

import re
from typing import Final

HIDDEN: Final = "***"

# scheme://userinfo@ where userinfo runs to the last "@" before the host's "/", "?", "#" or
# a blank: an unencoded "@" in a password is cut at the host, not inside the password.
_USERINFO: Final = re.compile(r"\b([A-Za-z][A-Za-z0-9+.-]*://)([^/?#\s]*)@")


def _hide(match: re.Match[str]) -> str:
    scheme, userinfo = match.groups()
    if "ssh" in scheme.lower() and ":" not in userinfo:
        return match.group(0)  # ssh://git@host: a login name, the key stays in ~/.ssh
    return f"{scheme}{HIDDEN}@"


def redact_url(text: str) -> str:
    """*text* with the user and password of every URL in it shown as ***.

    `https://user:token@host/x` and `https://token@host/x` become `https://***@host/x`; an
    ssh login without a password (`ssh://git@host/x`, scp-like `git@host:x`) is kept.
    """
    return _USERINFO.sub(_hide, text) if "@" in text else text


def redact_bytes(data: bytes) -> bytes:
    """redact_url() for raw output: bytes that are not UTF-8 pass through unchanged."""
    if b"@" not in data:
        return data
    return redact_url(data.decode(errors="surrogateescape")).encode(errors="surrogateescape")

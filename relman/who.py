"""Who a job is by, as the history and the manifests record it: the user, the SSH client's
address, and the label a CI key's `ssh-command --as NAME` gives (issue 11).

Standard library only: the CLI checks the label at start, over SSH too."""

from __future__ import annotations

import pwd
import re
from typing import Any, Final

from relman.errors import UsageError

# Short and plain: it is printed in `relman history` and the lock holder's line.
WHO_LABEL: Final = re.compile(r"[A-Za-z0-9._@-]{1,64}")
WHO_LABEL_RULE: Final = "a name of 1 to 64 letters, digits, '.', '_', '@' or '-'"


def who_of(client: dict[str, Any], uid: int) -> str:
    """Who a request's job is by: the client's user (else the peer's uid); with
    `ssh-command --as NAME`, NAME and the login name of the peer's uid, which the control
    socket vouches for (`ci-deploy (deploy)`); then the SSH client's address."""
    label = client.get("as")
    if label is not None:
        if not isinstance(label, str) or not WHO_LABEL.fullmatch(label):
            raise UsageError(f"--as {label!r}: not {WHO_LABEL_RULE}")
        try:
            login = pwd.getpwuid(uid).pw_name
        except KeyError:
            login = f"uid {uid}"
        who = f"{label} ({login})"
    else:
        who = str(client.get("user") or f"uid {uid}")
    if client.get("ssh"):
        who += f" via ssh from {client['ssh']}"
    return who

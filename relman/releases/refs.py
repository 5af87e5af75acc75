"""Validate refs before git sees them, then resolve them with --end-of-options."""

from __future__ import annotations

import re

from relman.errors import BadRef

MAX_REF_LENGTH = 255
# git check-ref-format's forbidden characters, plus whitespace and control characters.
FORBIDDEN = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]")


def validate_ref(ref: str) -> str:
    """Return *ref* if it may be handed to git, else raise BadRef naming the reason."""
    if not ref:
        raise BadRef(ref, "empty")
    if ref.startswith("-"):
        raise BadRef(ref, "must not start with '-'")
    if ".." in ref:
        raise BadRef(ref, "must not contain '..'")
    if len(ref) > MAX_REF_LENGTH:
        raise BadRef(ref[:40] + "...", f"longer than {MAX_REF_LENGTH} characters")
    if FORBIDDEN.search(ref):
        raise BadRef(ref, "contains a character git does not allow in a ref")
    if ref.endswith((".lock", "/", ".")) or "//" in ref or "@{" in ref:
        raise BadRef(ref, "is not a valid git ref name")
    return ref

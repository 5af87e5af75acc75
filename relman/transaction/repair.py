"""State the daemon finds unreadable or foreign (at start, or `current` while it runs): set
aside, never a reason to stop (DESIGN section 6), and `current` linked again to the release
that served last."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

import structlog

from relman.atomic import read_link, replace_symlink
from relman.releases import history
from relman.releases.ids import is_release_id
from relman.transaction.app import App
from relman.transaction.runstate import Relinked

log = structlog.get_logger(__name__)

# History events after which the entry's release served as the live one.
WENT_LIVE: Final = frozenset({"deployed", "rolled_back", "restarted", "started"})


def set_aside_current(app: App) -> bool:
    """Set aside `current` if it is there but not a symlink (a directory another tool
    made); whether it was."""
    current = app.root.current
    if not os.path.lexists(current) or current.is_symlink():
        return False
    app.store.set_aside(current, "not a symlink")
    return True


def set_aside_unreadable_state(app: App) -> tuple[bool, list[str]]:
    """Set aside `current` if it is not a symlink, and every manifest that cannot be read;
    whether `current` was set aside, and notes."""
    notes = [f"the manifest of {rid} could not be read: set aside"
             for rid in app.store.set_aside_unreadable()]
    if not set_aside_current(app):
        return False, notes
    notes.append("current was not a symlink: set aside")
    return True, notes


def last_served(app: App) -> str | None:
    """The release run/app.sock leads to (`<id>.<n>.sock`), else the last one the history
    says went live: where a `current` that was set aside should point, when no server runs."""
    clues: list[object] = []
    if (name := read_link(app.root.app_sock)) is not None:
        clues.append(name.removesuffix(".sock").rsplit(".", 1)[0])
    clues += reversed([e.get("release") for e in history.read(app.root.history)
                       if e.get("event") in WENT_LIVE])
    for clue in clues:
        if isinstance(clue, str) and is_release_id(clue) and app.root.release_dir(clue).is_dir():
            return clue
    return None


def relink_current(app: App) -> str:
    """Point `current` (set aside) at the release that served last, if one is known."""
    release = last_served(app)
    if release is None:
        log.warning("current.left_absent", reason="no release is known to have served last")
        return "no release is known to have served last: current left absent"
    replace_symlink(app.root.current, Path("releases") / release)
    app.record.submit(Relinked(release))
    return f"current linked again to {release}, the release that served last"

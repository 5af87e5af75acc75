"""The daemon's file watch: its config file (reload on change) and the app root, where
another tool may flip or replace `current`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import watchfiles

# step: how often watchfiles' thread wakes to look for news, taking the GIL; its default,
# 50 ms, was most of the idle daemon's CPU (0.15% of a core). 500 ms costs half a second
# more before a config edit or an external flip is seen (a deploy or restart reads the
# config file again anyway).
STEP_MS = 500


async def watch_files(config_path: Path, root: Path, *, on_config: Callable[[], None],
                      on_current: Callable[[], None], stop: asyncio.Event) -> None:
    """Call *on_config* when *config_path* changes and *on_current* when root/current does,
    until *stop* is set (the watch thread sees it within STEP_MS).

    rust_timeout=0: watchfiles' thread never returns to the event loop while nothing
    changes. Its default (5 s) made the idle daemon hand the watch from thread to loop and
    back every 5 seconds (a task group, a thread hand-off) for nothing (issue 11). Without
    it, a cancelled watch would wait forever for its thread: *stop* ends it.
    """
    config_path = config_path.resolve()
    current = root / "current"
    async for changes in watchfiles.awatch(config_path.parent, root, recursive=False,
                                            debounce=200, step=STEP_MS, rust_timeout=0,
                                            stop_event=stop):
        paths = {Path(p) for _change, p in changes}
        if config_path in paths:
            on_config()
        if current in paths:
            on_current()

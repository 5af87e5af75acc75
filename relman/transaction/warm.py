"""WarmKeeper: the previous release's server kept running swap.keep_warm seconds after a
switch, so that a rollback within that time is a switch only. The record says which
instance is warm and until when; this keeps the timer that ends its window."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from relman.supervisor import ServerHandle
from relman.transaction.record import RunRecord
from relman.transaction.runstate import KeptWarm, Retired

Stop = Callable[[ServerHandle], Coroutine[Any, Any, None]]


class WarmKeeper:
    """The one warm instance's keep_warm window and the stop at its end."""

    def __init__(self, record: RunRecord, handles: Mapping[str, ServerHandle],
                 stop: Stop) -> None:
        self.record, self.handles, self.stop = record, handles, stop
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    def server(self, release: str | None = None) -> ServerHandle | None:
        """The warm instance's server (of *release*, if given), if it runs."""
        warm = self.record.state.warm
        if warm is None or (release is not None and warm.release != release):
            return None
        return self.handles.get(warm.name)

    def keep(self, handle: ServerHandle, seconds: float, *, until: float = 0.0) -> None:
        """Keep *handle* (drained, not live) running *seconds* (to *until*, if given). Only
        the previous release stays warm: any other warm server is stopped now, so a run of
        deploys never piles up old servers."""
        other = self.server()
        self.record.submit(KeptWarm(handle.instance, seconds, until))
        if other is not None and other is not handle:
            self._spawn(self.stop(other))
        self.cancel()
        self._timer = asyncio.get_running_loop().call_later(
            seconds, lambda: self._spawn(self._cool(handle)))

    def cancel(self) -> None:
        """No timer: the warm server is being reused, or everything stops."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def _cool(self, handle: ServerHandle) -> None:
        """The window is over: stop the warm server, if it is still that one."""
        if self.server() is handle:
            self._timer = None
            self.record.submit(Retired(handle.instance))
            await self.stop(handle)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run *coro* in the background, keeping a reference until it is done."""
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

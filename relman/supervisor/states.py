"""ServerState: an app server's lifecycle, its transition table and the one transition path."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Final


class ServerState(StrEnum):
    STARTING = "starting"
    HEALTHY = "healthy"
    LIVE = "live"
    WARM = "warm"          # the previous live release, kept running for a fast rollback
    DRAINING = "draining"
    STOPPING = "stopping"
    STOPPED = "stopped"
    CRASHED = "crashed"


S = ServerState
ALLOWED: Final[Mapping[ServerState, frozenset[ServerState]]] = {
    S.STARTING: frozenset({S.HEALTHY, S.CRASHED, S.STOPPING}),
    S.HEALTHY: frozenset({S.LIVE, S.WARM, S.STOPPING, S.CRASHED}),  # WARM: adopted
    S.LIVE: frozenset({S.DRAINING, S.WARM, S.STOPPING, S.CRASHED}),
    # HEALTHY: a warm server taken over as a prepared candidate (rollback --prepare).
    S.WARM: frozenset({S.LIVE, S.HEALTHY, S.STOPPING, S.CRASHED}),
    S.DRAINING: frozenset({S.STOPPING, S.WARM, S.LIVE, S.CRASHED}),
    S.STOPPING: frozenset({S.STOPPED, S.CRASHED}),
    S.STOPPED: frozenset(),
    S.CRASHED: frozenset({S.STOPPING, S.STOPPED}),
}


class IllegalTransition(Exception):
    pass


def check_transition(old: ServerState, new: ServerState) -> None:
    if new != old and new not in ALLOWED[old]:
        raise IllegalTransition(f"{old} -> {new}")

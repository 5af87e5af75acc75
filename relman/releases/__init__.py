"""The release store: layout, fetch, build, venv cache, registry, links, prune, history."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from relman.releases.layout import AppRoot
from relman.releases.registry import Manifest, ReleaseState

if TYPE_CHECKING:
    from relman.releases.store import ReleaseStore

__all__ = ["AppRoot", "Manifest", "ReleaseState", "ReleaseStore"]


def __getattr__(name: str) -> Any:
    """ReleaseStore (git, venvs, structlog) is imported when first used: the CLI's commands
    that only talk to the daemon never load it."""
    if name == "ReleaseStore":
        from relman.releases.store import ReleaseStore

        return ReleaseStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

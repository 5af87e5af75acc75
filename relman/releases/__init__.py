"""The release store: layout, fetch, build, venv cache, registry, links, prune, history."""

from relman.releases.layout import AppRoot
from relman.releases.registry import Manifest, ReleaseState
from relman.releases.store import ReleaseStore

__all__ = ["AppRoot", "Manifest", "ReleaseState", "ReleaseStore"]

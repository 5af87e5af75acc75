"""The links a job moves (run/app.sock, current, run/next.sock), read when it begins and put
back as they were when it fails."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from relman.atomic import read_link, replace_symlink
from relman.releases.layout import AppRoot


@dataclass(frozen=True, slots=True)
class Links:
    """Where each link pointed (None: there was no link), app.sock first: traffic goes back
    before anything else does."""

    targets: tuple[tuple[Path, str | None], ...]

    @classmethod
    def read(cls, root: AppRoot) -> Links:
        return cls(tuple((link, read_link(link))
                         for link in (root.app_sock, root.current, root.next_sock)))

    def moved(self) -> list[Path]:
        """The links that no longer point where they did."""
        return [link for link, target in self.targets if read_link(link) != target]

    def restore(self) -> list[Path]:
        """Point every moved link back (remove one that did not exist); returns them."""
        moved = self.moved()
        for link, target in self.targets:
            if link not in moved:
                continue
            if target is None:
                link.unlink(missing_ok=True)
            else:
                replace_symlink(link, target)
        return moved

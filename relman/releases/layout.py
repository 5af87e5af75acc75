"""AppRoot: the one place that knows the paths under an app root (DESIGN section 4)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

# Directories `relman init` creates, with their modes. run/ must be traversable by nginx's
# worker user (it connects to run/app.sock), hence 0o755 on it and its parents.
DIRS: tuple[tuple[str, int], ...] = (
    ("repo", 0o750),
    ("releases", 0o755),
    ("venvs", 0o755),
    ("shared", 0o750),
    ("run", 0o755),
    ("state", 0o750),
    ("state/releases", 0o750),
    ("log", 0o750),
    ("static", 0o755),  # [static] files, read by nginx's workers (releases/static.py)
)


@dataclass(frozen=True, slots=True)
class AppRoot:
    """Paths of one app's root directory."""

    root: Path

    @property
    def repo(self) -> Path:
        return self.root / "repo"

    @property
    def releases(self) -> Path:
        return self.root / "releases"

    @property
    def venvs(self) -> Path:
        return self.root / "venvs"

    @property
    def shared(self) -> Path:
        return self.root / "shared"

    @property
    def current(self) -> Path:
        return self.root / "current"

    def current_release(self) -> str | None:
        """The release `current` points at, or None before the first deploy."""
        try:
            return Path(os.readlink(self.current)).name
        except OSError:  # missing, or not a link
            return None

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def app_sock(self) -> Path:
        return self.run / "app.sock"

    @property
    def next_sock(self) -> Path:
        return self.run / "next.sock"

    @property
    def control_sock(self) -> Path:
        return self.run / "relman.ctl"

    @property
    def state(self) -> Path:
        return self.root / "state"

    @property
    def manifests(self) -> Path:
        return self.state / "releases"

    @property
    def journal(self) -> Path:
        return self.state / "journal.json"

    @property
    def settings_key(self) -> Path:
        """settings.key: the key of the env value hashes in manifests (relman.settings)."""
        return self.state / "settings.key"

    @property
    def switch_record(self) -> Path:
        """switch.json: what older daemons kept of the last switch (read once, into run.json)."""
        return self.state / "switch.json"

    @property
    def run_record(self) -> Path:
        """run.json: what runs, the live and warm instances, the last switch (RunRecord)."""
        return self.state / "run.json"

    @property
    def deploy_lock(self) -> Path:
        return self.state / "deploy.lock"

    @property
    def daemon_lock(self) -> Path:
        return self.state / "daemon.lock"


    @property
    def static(self) -> Path:
        """static/: <name>/ per [static] prefix, the kept releases' files (releases/static.py)."""
        return self.root / "static"

    @property
    def log(self) -> Path:
        return self.root / "log"

    @property
    def history(self) -> Path:
        return self.log / "history.jsonl"

    @property
    def crash_log(self) -> Path:
        """Tracebacks of the daemon's internal errors, which the CLI's exit-70 line names."""
        return self.log / "relman-crash.log"

    def release_dir(self, release_id: str) -> Path:
        return self.releases / release_id

    def manifest(self, release_id: str) -> Path:
        return self.manifests / f"{release_id}.json"

    def tree_index(self, release_id: str) -> Path:
        """What the export of a release wrote, file by file (relman.releases.linking)."""
        return self.manifests / f"{release_id}.tree"

    def build_log(self, release_id: str) -> Path:
        return self.log / f"{release_id}.build.log"

    def server_log(self, release_id: str) -> Path:
        return self.log / f"{release_id}.log"

    def process_log(self, release_id: str, process: str) -> Path:
        """The output of every instance of *process* ([processes.NAME]) of a release."""
        return self.log / f"{release_id}.{process}.log"

    def socket(self, instance: str) -> Path:
        return self.run / f"{instance}.sock"

    def pidfile(self, instance: str) -> Path:
        return self.run / f"{instance}.pid"

    def create(self) -> list[Path]:
        """Create missing directories; return the ones created."""
        made = []
        for name, mode in ((".", 0o755), *DIRS):
            path = self.root / name
            if not path.is_dir():
                path.mkdir(mode=mode, parents=True, exist_ok=True)
                os.chmod(path, mode)  # mkdir's mode is filtered by the umask
                made.append(path.resolve())
        return made

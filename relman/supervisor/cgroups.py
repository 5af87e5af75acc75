"""CgroupTree: one cgroup v2 directory per app server instance, where the daemon may create
them. The cgroup's cgroup.procs is the truth about what an instance runs: a double-forked
helper or a process that renamed itself (gunicorn with setproctitle) is still in it, and
cgroup.kill ends all of it at once.

Where the tree lives:
- under systemd, the unit's own cgroup, which `Delegate=yes` in relman@.service hands to the
  deploy user (systemd 252, Debian 12, has no private writable cgroup mount:
  ProtectControlGroups=yes would make the whole hierarchy read-only, so the unit leaves it
  off; see the comment there);
- run as root outside any service (CI, a container), `<mount>/relman/<app>-<hash of root>`;
- nowhere else: without a writable cgroup, instances are tracked by the RELMAN_APP,
  RELMAN_ROOT and RELMAN_UNIT variables in their environment (identity.py).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import signal
from pathlib import Path
from typing import Final

import structlog

log = structlog.get_logger(__name__)

# Tests only: "off" makes the daemon track processes by environment tags, as it must where
# it may not create cgroups (a deploy user's daemon outside systemd).
CGROUP_ENV: Final = "RELMAN_CGROUPS"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\Z")
# A cgroup being removed (by a concurrent stop of the same instance) answers ENODEV.
GONE: Final = frozenset({errno.ENOENT, errno.ENODEV})


def cgroup2_mount(mountinfo: str) -> Path | None:
    """Where the cgroup v2 hierarchy is mounted (/sys/fs/cgroup, or .../unified on a hybrid
    host), from the text of /proc/self/mountinfo."""
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        if sep and right.split(" ", 1)[0] == "cgroup2":
            return Path(left.split(" ")[4])
    return None


def own_cgroup(proc_cgroup: str) -> str | None:
    """This process's cgroup v2 path ("/system.slice/relman@shop.service"), from the text
    of /proc/self/cgroup."""
    for line in proc_cgroup.splitlines():
        if line.startswith("0::"):
            return line[3:].strip() or "/"
    return None


def tree_base(mount: Path, own: str, app: str, root: Path, *, is_root: bool) -> Path | None:
    """The directory that holds this app's instance cgroups, or None where there is none to
    try: the service's own (delegated) cgroup, or a relman directory at the top for root."""
    key = f"{app}-{hashlib.sha256(str(root).encode()).hexdigest()[:8]}"
    if own != "/":
        return mount / own.lstrip("/") / f"relman-{key}"
    return mount / "relman" / key if is_root else None


class CgroupTree:
    """The instance cgroups of one app, below *base*."""

    def __init__(self, base: Path) -> None:
        self.base = base

    @classmethod
    def find(cls, app: str, root: Path) -> CgroupTree | None:
        """The tree for *app*, created if need be; None where cgroups cannot be used."""
        if os.environ.get(CGROUP_ENV) == "off":
            return None
        try:
            mount = cgroup2_mount(Path("/proc/self/mountinfo").read_text())
            own = own_cgroup(Path("/proc/self/cgroup").read_text())
        except OSError:
            return None
        if mount is None or own is None:
            return None
        base = tree_base(mount, own, app, root, is_root=os.geteuid() == 0)
        if base is None:
            return None
        try:
            base.mkdir(parents=True, exist_ok=True)
            if not os.access(base / "cgroup.procs", os.W_OK):
                return None
        except OSError as e:  # EACCES without delegation, EROFS under ProtectControlGroups
            log.info("cgroups.unavailable", base=str(base), error=e.strerror)
            return None
        return cls(base)

    def path(self, instance: str) -> Path:
        if not _NAME.match(instance):
            raise ValueError(f"not an instance name: {instance!r}")
        return self.base / instance

    def owns(self, path: Path) -> bool:
        """True if *path* is one of this tree's instance cgroups (a record is never trusted
        to name a directory elsewhere)."""
        return path.parent == self.base and bool(_NAME.match(path.name))

    def create(self, instance: str) -> Path:
        path = self.path(instance)
        path.mkdir(exist_ok=True)
        return path

    def instances(self) -> list[str]:
        """The instance cgroups that exist now."""
        try:
            return sorted(p.name for p in self.base.iterdir() if p.is_dir())
        except FileNotFoundError:
            return []

    def procs(self, instance: str) -> list[int]:
        """Every process in *instance*'s cgroup."""
        try:
            text = (self.path(instance) / "cgroup.procs").read_text()
        except OSError as e:
            if e.errno in GONE:
                return []
            raise
        return [int(pid) for pid in text.split()]

    def kill(self, instance: str) -> None:
        """SIGKILL everything in the cgroup (cgroup.kill, Linux 5.14; before it, each pid
        read from cgroup.procs, repeated by remove() until the cgroup is empty)."""
        path = self.path(instance)
        if not (path / "cgroup.kill").exists():  # gone, or a kernel without cgroup.kill
            for pid in self.procs(instance):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            return
        try:
            (path / "cgroup.kill").write_text("1")
        except OSError as e:
            if e.errno not in GONE:
                raise

    def signal(self, instance: str, sig: int) -> int:
        """Send *sig* to each process in the cgroup; how many were sent."""
        sent = 0
        for pid in self.procs(instance):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
                sent += 1
        return sent

    def remove(self, instance: str) -> bool:
        """Remove the (empty) cgroup; False while processes are still leaving it."""
        try:
            self.path(instance).rmdir()
        except OSError as e:
            if e.errno in GONE:  # another stop of the same instance removed it first
                return True
            if e.errno == errno.EBUSY:
                return False
            raise
        return True

    def remove_base(self) -> None:
        """Remove the app's (empty) directory, at a clean shutdown."""
        with contextlib.suppress(OSError):  # EBUSY/ENOTEMPTY: an instance is still in it
            self.base.rmdir()

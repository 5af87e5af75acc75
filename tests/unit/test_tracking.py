"""Process tracking, pure parts: where the cgroup tree is, and which instance records are
read at all (a record never names a path or an instance other than its own)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from relman.supervisor.cgroups import CgroupTree, cgroup2_mount, own_cgroup, tree_base
from relman.supervisor.identity import CorruptRecord, InstanceRecord, read_record, write_record

HYBRID = """\
25 1 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
30 25 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw
32 30 0:28 / /sys/fs/cgroup/systemd rw,relatime shared:11 - cgroup cgroup rw,name=systemd
"""
PURE = "29 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw\n"


@pytest.mark.parametrize(("mountinfo", "mount"), [
    (HYBRID, Path("/sys/fs/cgroup/unified")), (PURE, Path("/sys/fs/cgroup")),
    ("25 1 0:23 / /sys rw - sysfs sysfs rw\n", None)])
def test_the_cgroup2_mount_is_found_on_hybrid_and_pure_hosts(mountinfo, mount):
    """The cgroup v2 hierarchy is where mountinfo says, on a hybrid host or a pure v2 one."""
    assert cgroup2_mount(mountinfo) == mount


@pytest.mark.parametrize(("text", "own"), [
    ("0::/system.slice/system-relman.slice/relman@shop.service\n",
     "/system.slice/system-relman.slice/relman@shop.service"),
    ("9:name=systemd:/\n4:memory:/x\n0::/\n", "/"), ("4:memory:/x\n", None)])
def test_own_cgroup_is_the_v2_line(text, own):
    """A process's v2 cgroup is its "0::" line; a v1-only host has none."""
    assert own_cgroup(text) == own


def test_tree_base_is_the_service_cgroup_or_a_relman_directory_for_root():
    """Under a service, a child of its (delegated) cgroup; at the top, a relman directory,
    for root only; one per app root."""
    mount = Path("/sys/fs/cgroup")
    svc = tree_base(mount, "/system.slice/relman@shop.service", "shop", Path("/srv/shop"),
                    is_root=False)
    assert svc is not None
    assert svc.parent == mount / "system.slice/relman@shop.service"
    assert svc.name.startswith("relman-shop-")
    top = tree_base(mount, "/", "shop", Path("/srv/shop"), is_root=True)
    assert top is not None
    assert top.parent == mount / "relman"
    assert top != tree_base(mount, "/", "shop", Path("/srv/shop2"), is_root=True)
    assert tree_base(mount, "/", "shop", Path("/srv/shop"), is_root=False) is None


def test_a_tree_owns_only_its_own_instance_cgroups(tmp_path):
    """A record's cgroup is acted on only when it is a direct child of the app's tree."""
    tree = CgroupTree(tmp_path / "relman-shop-1")
    assert tree.owns(tree.base / "20261123T031500Z-1a2b3c4.1")
    assert not tree.owns(tmp_path / "system.slice")
    assert not tree.owns(tree.base / "a" / "b")
    assert not tree.owns(tree.base / "..")
    with pytest.raises(ValueError, match="instance name"):
        tree.path("../escape")


RELEASE = "20261123T031500Z-1a2b3c4"


def write(tmp_path: Path, name: str, data: object) -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def test_a_record_round_trips(tmp_path):
    """What write_record writes, read_record reads back."""
    record = InstanceRecord(instance=f"{RELEASE}.1", release=RELEASE, cwd="/srv/x",
                            cgroup="/sys/fs/cgroup/x", spawned=1.5, pid=42,
                            create_time=2.5, uid=1000)
    write_record(tmp_path / f"{RELEASE}.1.pid", record)
    assert read_record(tmp_path / f"{RELEASE}.1.pid") == record
    assert read_record(tmp_path / "missing.pid") is None


@pytest.mark.parametrize("data", [
    "12345\n",  # a plain pid, as `uwsgi --pidfile` writes
    "{\"instance\": ",  # torn
    [1, 2],
    {"instance": f"{RELEASE}.2", "release": RELEASE},  # another instance than its name
    {"instance": f"{RELEASE}.1", "release": "../../etc"},
    {"instance": f"{RELEASE}.1", "release": RELEASE, "pid": "1"},
    {"instance": f"{RELEASE}.1", "release": RELEASE, "cgroup": 7},
    "[" * 100_000,
    {"instance": f"{RELEASE}.1", "release": RELEASE, "pid": -1},
    {"instance": f"{RELEASE}.1", "release": RELEASE, "pid": True},
    {"instance": f"{RELEASE}.1", "release": RELEASE, "uid": -5},
    {"instance": f"{RELEASE}.1", "release": RELEASE, "cwd": "releases/x"},
], ids=["plain-pid", "torn", "list", "other-instance", "path-release", "str-pid",
        "int-cgroup", "deep", "negative-pid", "bool-pid", "negative-uid", "relative-cwd"])
def test_garbled_or_foreign_records_are_corrupt(tmp_path, data):
    """A record that is not one, or names another instance or a path, is never used."""
    path = write(tmp_path, f"{RELEASE}.1.pid", data)
    with pytest.raises(CorruptRecord):
        read_record(path)


def test_an_old_pidfile_is_still_read(tmp_path):
    """A pidfile of relman before instance records (argv, socket, log) is read, its extra
    keys ignored: the socket path it names is never used."""
    path = write(tmp_path, f"{RELEASE}.1.pid", {
        "pid": 42, "create_time": 1.0, "argv": ["gunicorn"], "cwd": "/srv/x",
        "instance": f"{RELEASE}.1", "release": RELEASE, "socket": "/etc/passwd",
        "log": "/etc/shadow", "protocol": "http"})
    record = read_record(path)
    assert record is not None
    assert (record.pid, record.uid, record.cgroup) == (42, -1, "")

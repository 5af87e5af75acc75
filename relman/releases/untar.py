"""Unpack a tar stream (git archive's) into a release directory, never writing outside it."""

from __future__ import annotations

import copy
import os
import tarfile
from collections.abc import Iterator
from typing import IO, Final

# PEP 706's extraction filters came in 3.11.4; Debian 12's /usr/bin/python3, the interpreter
# a deploy user and systemd get, is 3.11.2, where extractall(filter=...) is a TypeError. A
# capability flag rather than a version check (trio's style), so a test can take the other
# path on any interpreter.
HAS_DATA_FILTER: Final = hasattr(tarfile, "data_filter")


class UnsafeMember(Exception):
    """A member that would land outside the destination, or is not plain data."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name}: {reason}")
        self.name, self.reason = name, reason


def unpack(stream: IO[bytes], dest: str | os.PathLike[str]) -> None:
    """Extract the tar *stream* into *dest* as PEP 706's "data" filter does: no absolute
    paths, no `..` out of *dest*, no links leading out of it, no devices or fifos, no
    setuid or group/other-write bits, owned by whoever extracts. UnsafeMember otherwise."""
    # S202 asks for a filter: both calls check every member ("data", or _check below).
    with tarfile.open(fileobj=stream, mode="r|") as tar:
        if HAS_DATA_FILTER:
            tar.extractall(dest, filter=_data_filter)  # noqa: S202
        else:
            tar.extractall(dest, members=_checked(tar, os.path.realpath(dest)))  # noqa: S202


def _data_filter(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo:
    try:
        return tarfile.data_filter(member, dest)
    except tarfile.FilterError as e:
        raise UnsafeMember(member.name, _REASONS.get(type(e).__name__, str(e))) from None


_REASONS: Final = {
    "AbsolutePathError": "an absolute path",
    "OutsideDestinationError": "a path outside the release",
    "SpecialFileError": "a device, fifo or other special file",
    "AbsoluteLinkError": "a link to an absolute path",
    "LinkOutsideDestinationError": "a link leading outside the release",
}


def _checked(tar: tarfile.TarFile, dest: str) -> Iterator[tarfile.TarInfo]:
    # Lazily, one member at a time: each check sees the links extracted before it, as the
    # filter does (a file under an earlier symlink is judged by where it really lands).
    for member in tar:
        yield _check(member, dest)


def _check(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo:
    """The "data" filter of 3.11.4+ (tarfile._get_filtered_attrs), for 3.11.0 to 3.11.3;
    *dest* is a real path."""
    name = member.name.lstrip("/")  # as the filter does: "/etc/x" becomes dest/etc/x
    if not _inside(os.path.join(dest, name), dest):
        raise UnsafeMember(member.name, _REASONS["OutsideDestinationError"])
    if member.islnk() or member.issym():
        if os.path.isabs(member.linkname):
            raise UnsafeMember(member.name, _REASONS["AbsoluteLinkError"])
        base = os.path.join(dest, os.path.dirname(name)) if member.issym() else dest
        if not _inside(os.path.join(base, member.linkname), dest):
            raise UnsafeMember(member.name, _REASONS["LinkOutsideDestinationError"])
    elif not (member.isreg() or member.isdir()):
        raise UnsafeMember(member.name, _REASONS["SpecialFileError"])
    checked = copy.copy(member)
    checked.name = name
    mode = member.mode & 0o755  # no setuid/setgid/sticky, no group or other write
    if member.isreg() or member.islnk():
        mode = (mode if mode & 0o100 else mode & ~0o111) | 0o600
    # 3.11's extractall needs a number where the filter leaves a directory's mode to the
    # umask, and it chowns when run as root: to our own ids, as if not set.
    checked.mode = mode
    checked.uid, checked.gid, checked.uname, checked.gname = os.geteuid(), os.getegid(), "", ""
    return checked


def _inside(path: str, dest: str) -> bool:
    return os.path.commonpath([os.path.realpath(path), dest]) == dest

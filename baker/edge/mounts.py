"""Read-only loop mounts of a filesystem inside a raw disk file, and their undoing.

Capture and `baker diff` both read an image's root tree this way. The undoing is armed before
`mount` runs: a stop signal can land after the kernel mounted the filesystem but before `mount`
returned, and a mount left under a work directory pins its loop device and keeps the
directory from being removed (rmtree reaches into the image and fails on every file).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from baker.edge import tools
from baker.errors import BuildError


@contextlib.contextmanager
def read_only(
    raw: Path, mountpoint: Path, offset: int, size: int | None = None, fs_type: str = "ext4"
) -> Iterator[Path]:
    """The filesystem at `offset` (of `size` bytes, or to the end) of `raw`, mounted
    read-only at `mountpoint` (created here, removed after): ext4, or XFS or btrfs (a vendor
    image's root)."""
    mountpoint.mkdir()
    # The journal or log is never replayed, so a read-only mount writes nothing at all.
    options = f"ro,{_NO_REPLAY[fs_type]},loop,offset={offset}" + (
        f",sizelimit={size}" if size else ""
    )
    try:
        tools.run(["mount", "-t", fs_type, "-o", options, raw, mountpoint])
        yield mountpoint
    finally:
        unmount(mountpoint)
        mountpoint.rmdir()
        detach_loops(raw)


_NO_REPLAY = {"ext4": "noload", "xfs": "norecovery", "btrfs": "rescue=nologreplay"}


def unmount(mountpoint: Path) -> None:
    if not mountpoint.is_mount():
        return
    try:
        tools.run(["umount", mountpoint])
    except BuildError:
        # Still busy (something outside holds a file open): detach it from the tree now, so
        # the directory can go; the kernel frees the loop device when the last user lets go.
        tools.run(["umount", "--lazy", mountpoint])


def detach_loops(raw: Path) -> None:
    """Free loop devices still set up on `raw`: `mount -o loop` frees its device on unmount,
    but not always after a failed or interrupted mount, and one left would pin the file."""
    if not raw.exists():
        return
    out = tools.run(["losetup", "--noheadings", "--output", "NAME", "--associated", raw])
    for device in out.split():
        with contextlib.suppress(BuildError):
            tools.run(["losetup", "--detach", device])


def release_under(directory: Path) -> None:
    """Lazily unmount whatever is still mounted at or below `directory`, deepest first, so
    the directory can be removed without reaching into a mounted image."""
    for target in sorted(mounted_under(directory), key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(BuildError):
            tools.run(["umount", "--lazy", target])


def mounted_under(directory: Path) -> list[Path]:
    """The mount points at or below `directory`, from this process's view of the mounts."""
    root = os.path.realpath(directory)
    found = []
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        fields = line.split()
        if len(fields) < 5:
            continue
        target = _unescape(fields[4])
        if target == root or target.startswith(root.rstrip("/") + "/"):
            found.append(Path(target))
    return found


def _unescape(field: str) -> str:
    # mountinfo writes space, tab, newline and backslash in a path as octal escapes.
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field

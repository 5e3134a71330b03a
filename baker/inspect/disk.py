"""What `baker diff` reads from a disk image without booting it, and the disk-level part of
its answer.

An image is converted to a sparse raw file, its partition table read with sfdisk, its root
partition probed and loop-mounted read-only, and the ext4 superblock read with dumpe2fs; then
the identity of two disks (GPT GUIDs, filesystem UUID, hash seed, ...) is compared, because two
images can hold the same files and still not be the same bytes.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from baker.edge import mounts, tools
from baker.errors import BuildError, InputError
from baker.image.layout import LINUX_ROOT_X86_64_TYPE

# Taken when no partition has baker's root type: images made by other tools mark their root
# as plain Linux data (GPT), as another architecture's discoverable root, or as MBR type 83.
_LINUX_TYPES = frozenset(
    {
        "0FC63DAF-8483-4772-8E79-3D69D8477DE4",  # Linux filesystem data
        "44479540-F297-41B2-9AF7-D131D5F0458A",  # root, x86
        "B921B045-1DF0-41C3-AF44-4C6F280D3FAE",  # root, arm64
        "69DAD710-2CE4-4E3C-B16C-21A1D49ABED3",  # root, arm
        "83",
    }
)
_EXT_TYPES = frozenset({"ext2", "ext3", "ext4"})
_OTHER_ROOTS = frozenset({"xfs", "btrfs"})

# Superblock fields worth reporting, with their display names. Counters that follow from the
# content (free blocks, lifetime writes) and seeds derived from the UUID are left out: they
# would repeat, as noise, what the file comparison already says.
_FS_FIELDS = (
    ("Filesystem UUID", "filesystem UUID"),
    ("Filesystem volume name", "filesystem label"),
    ("Directory Hash Seed", "filesystem directory hash seed"),
    ("Default directory hash", "filesystem directory hash"),
    ("Filesystem created", "filesystem created"),
    ("Filesystem flags", "filesystem flags"),
    ("Default mount options", "filesystem default mount options"),
    ("Mount options", "filesystem mount options"),
    ("Filesystem state", "filesystem state"),
    ("Errors behavior", "filesystem errors behaviour"),
    ("Filesystem OS type", "filesystem OS type"),
    ("Block size", "filesystem block size"),
    ("Block count", "filesystem block count"),
    ("Reserved block count", "filesystem reserved block count"),
    ("Inode count", "filesystem inode count"),
    ("Inode size", "filesystem inode size"),
    ("Reserved blocks uid", "filesystem reserved blocks uid"),
    ("Reserved blocks gid", "filesystem reserved blocks gid"),
    ("Last mounted on", "filesystem last mounted on"),
    ("Last mount time", "filesystem last mount time"),
    ("Last write time", "filesystem last write time"),
    ("Mount count", "filesystem mount count"),
    ("Maximum mount count", "filesystem maximum mount count"),
    ("Last checked", "filesystem last checked"),
    ("Check interval", "filesystem check interval"),
    ("Checksum type", "filesystem checksum type"),
)
_FS_TIMES = frozenset({"Filesystem created", "Last mount time", "Last write time", "Last checked"})


@dataclass(frozen=True)
class Opened:
    """An image, mounted: its root tree and the metadata read on the way."""

    root: Path
    info: dict[str, Any]
    table: dict[str, Any]
    superblock: dict[str, str]
    fs_type: str = "ext4"  # the root's: ext4, or XFS or btrfs (a vendor's image as it is)


def image_info(image: Path) -> dict[str, Any]:
    """`qemu-img info` of the image; InputError if it is no disk image qemu-img can read."""
    try:
        info = json.loads(tools.run(["qemu-img", "info", "--output=json", "--", _qemu(image)]))
    except (BuildError, ValueError) as e:
        raise InputError(f"{image}: qemu-img cannot read it as a disk image ({e}).") from None
    return info if isinstance(info, dict) else {}


def _qemu(image: Path) -> Path:
    # qemu-img reads "name:rest" as a protocol ("nbd:", "json:", ...); an absolute path never is.
    return image.absolute()


@contextlib.contextmanager
def scratch(workdir: Path | None) -> Iterator[Path]:
    """A temporary directory under `workdir` for raw copies and mount points, removed after;
    never while something is still mounted in it."""
    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="baker-diff-", dir=workdir))
    try:
        yield work
    finally:
        _remove(work)


def open_image(image: Path, name: str, work: Path, stack: contextlib.ExitStack) -> Opened:
    """Mount the image's root partition read-only under `work`; `stack` undoes it all."""
    info = image_info(image)
    raw = work / f"{name}.raw"
    fmt = str(info.get("format") or "raw")
    # The probed format is passed on explicitly, so qemu-img never re-guesses it differently.
    tools.run(["qemu-img", "convert", "-q", "-f", fmt, "-O", "raw", "--", _qemu(image), raw])
    table = partition_table(raw, image)
    start, size = _root_partition(table, image)
    fs_type = _fs_type(raw, start, size)
    if fs_type not in _EXT_TYPES | _OTHER_ROOTS:
        found = f"found {fs_type}" if fs_type else "found nothing it recognises"
        raise InputError(
            f"{image}: its root partition holds no ext4, XFS or btrfs filesystem ({found})."
        )
    kind = "ext4" if fs_type in _EXT_TYPES else str(fs_type)
    mountpoint = stack.enter_context(mounts.read_only(raw, work / f"{name}.mnt", start, size, kind))
    if kind != "ext4":  # a vendor's root, taken as it is: no ext4 superblock to read
        return Opened(mountpoint, info, table, {}, kind)
    # dumpe2fs reads "file?offset=" names as NAME=value tags, so it is pointed at the loop
    # device the mount set up instead.
    device = tools.run(["findmnt", "-n", "-o", "SOURCE", "--mountpoint", mountpoint]).strip()
    superblock = _superblock(device)
    return Opened(mountpoint, info, table, superblock, kind)


def partition_table(raw: Path, image: Path) -> dict[str, Any]:
    """sfdisk's view of the raw disk; InputError naming `image` if it has no table."""
    try:
        doc = json.loads(tools.run(["sfdisk", "--json", raw]))
    except (BuildError, ValueError):
        raise InputError(f"{image}: not a disk image with a partition table.") from None
    table = doc.get("partitiontable") if isinstance(doc, dict) else None
    if not isinstance(table, dict):
        raise InputError(f"{image}: not a disk image with a partition table.")
    return table


def _root_partition(table: dict[str, Any], image: Path) -> tuple[int, int]:
    """(byte offset, byte size) of the root partition."""
    sector = int(table.get("sectorsize") or 512)
    parts = [p for p in table.get("partitions") or [] if isinstance(p, dict)]
    roots = [p for p in parts if str(p.get("type", "")).upper() == LINUX_ROOT_X86_64_TYPE]
    if not roots:
        linux = [p for p in parts if str(p.get("type", "")).upper() in _LINUX_TYPES]
        roots = sorted(linux, key=lambda p: int(p.get("size", 0)), reverse=True)
    if not roots:
        raise InputError(f"{image}: no root partition (no Linux partition in its table).")
    root = roots[0]
    return int(root["start"]) * sector, int(root["size"]) * sector


def _fs_type(raw: Path, offset: int, size: int) -> str | None:
    # Probed before mounting, so a wrong partition is bad input rather than a mount failure.
    tools.require("blkid")
    try:
        out = tools.run(
            ["blkid", "-p", "-o", "export", "--offset", str(offset), "--size", str(size), raw]
        )
    except BuildError:
        return None  # blkid exits 2 when it finds nothing
    fields = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    return fields.get("TYPE")


def _superblock(device: str) -> dict[str, str]:
    # C locale and UTC: the times it prints must not depend on the caller's environment.
    out = tools.run(["dumpe2fs", "-h", device], env={"LC_ALL": "C", "TZ": "UTC"})
    fields: dict[str, str] = {}
    for line in out.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() and key.strip() not in fields:
            fields[key.strip()] = value.strip()
    return fields


def _remove(work: Path) -> None:
    # Removing files under a live mount would reach into the image (or fail on it).
    mounts.release_under(work)
    if mounts.mounted_under(work):
        raise BuildError(f"{work} still has a mount in it; unmount it and remove {work}.")
    shutil.rmtree(work)


# -- disk metadata ---------------------------------------------------------------------------


def compare(a: Opened, b: Opened) -> list[str]:
    """The disk-level differences from `a` to `b`: format, partition table, superblock."""
    out: list[str] = []

    def changed(label: str, old: object, new: object) -> None:
        if old != new:
            out.append(f"{label} {_text(old)} -> {_text(new)}")

    changed("image format", a.info.get("format"), b.info.get("format"))
    changed("virtual size", a.info.get("virtual-size"), b.info.get("virtual-size"))
    if a.info.get("format") == b.info.get("format") == "qcow2":
        changed("qcow2 cluster size", a.info.get("cluster-size"), b.info.get("cluster-size"))
    ta, tb = a.table, b.table
    changed("partition table", ta.get("label"), tb.get("label"))
    changed("disk GUID" if ta.get("label") == "gpt" else "disk id", ta.get("id"), tb.get("id"))
    changed("sector size", ta.get("sectorsize"), tb.get("sectorsize"))
    changed("first usable LBA", ta.get("firstlba"), tb.get("firstlba"))
    changed("last usable LBA", ta.get("lastlba"), tb.get("lastlba"))
    pa, pb = ta.get("partitions") or [], tb.get("partitions") or []
    changed("partition count", len(pa), len(pb))
    for i, (x, y) in enumerate(zip(pa, pb, strict=False), start=1):
        for key, label in (
            ("start", "start"),
            ("size", "size"),
            ("type", "type"),
            ("uuid", "GUID"),
            ("name", "name"),
            ("attrs", "attributes"),
            ("bootable", "bootable"),
        ):
            changed(f"partition {i} {label}", x.get(key), y.get(key))
    for i, p in enumerate(pa[len(pb) :], start=len(pb) + 1):
        out.append(f"partition {i} removed ({_partition_text(p)})")
    for i, p in enumerate(pb[len(pa) :], start=len(pa) + 1):
        out.append(f"partition {i} added ({_partition_text(p)})")
    sa, sb = a.superblock, b.superblock
    fa = set(sa.get("Filesystem features", "").split())
    fb = set(sb.get("Filesystem features", "").split())
    if fa != fb:
        delta = [f"+{f}" for f in sorted(fb - fa)] + [f"-{f}" for f in sorted(fa - fb)]
        out.append("filesystem features " + " ".join(delta))
    for key, label in _FS_FIELDS:
        old, new = sa.get(key), sb.get(key)
        if key in _FS_TIMES:
            old, new = _fs_time(old), _fs_time(new)
        changed(label, old, new)
    return out


def _partition_text(p: dict[str, Any]) -> str:
    return f"start {p.get('start')}, size {p.get('size')}, type {p.get('type')}"


def _fs_time(value: str | None) -> str | None:
    if not value or value == "n/a":
        return value
    try:
        parsed = datetime.strptime(value, "%a %b %d %H:%M:%S %Y").replace(tzinfo=UTC)
    except ValueError:
        return value
    return parsed.strftime("%Y-%m-%dT%H:%M:%SZ")


def _text(value: object) -> str:
    return "(none)" if value is None or value == "" else str(value)

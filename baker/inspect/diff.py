"""`baker diff`: what differs between two images, read offline without booting either.

Each image is converted to a sparse raw file, its root partition is loop-mounted read-only, and
the two file trees are compared entry by entry; packages come from the artifacts' SBOMs, and
disk-level identity (GPT GUIDs, filesystem UUID, hash seed, ...) from the partition table and
the ext4 superblock, because two images can hold the same files and still not be the same bytes.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from baker.edge import tools
from baker.errors import BuildError, InputError
from baker.evidence.sbom import cyclonedx_packages
from baker.hashing import sha256_file
from baker.image.disk import LINUX_ROOT_X86_64_TYPE

IMAGE_FILE = "image.qcow2"
SBOM_FILE = "sbom.cdx.json"

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
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@dataclass(frozen=True)
class PackageChange:
    name: str
    old: str | None  # version; None = absent
    new: str | None


@dataclass(frozen=True)
class FileChange:
    path: str
    kind: str  # "added" | "removed" | "changed" | "metadata"
    details: tuple[str, ...]


@dataclass(frozen=True)
class Diff:
    a: str
    b: str
    identical: bool  # same image digest
    packages: tuple[PackageChange, ...]  # empty when either side has no SBOM
    files: tuple[FileChange, ...]
    disk: tuple[str, ...]
    a_digest: str = ""
    b_digest: str = ""
    packages_compared: bool = False  # both sides had an SBOM

    def as_dict(self) -> dict[str, Any]:
        return {
            "a": self.a,
            "b": self.b,
            "a_digest": self.a_digest,
            "b_digest": self.b_digest,
            "identical": self.identical,
            "packages_compared": self.packages_compared,
            "packages": [{"name": p.name, "old": p.old, "new": p.new} for p in self.packages],
            "files": [
                {"path": f.path, "kind": f.kind, "details": list(f.details)} for f in self.files
            ],
            "disk": list(self.disk),
        }


# -- inputs ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Side:
    given: Path
    image: Path
    sbom: Path | None
    digest: str


def _side(path: Path) -> _Side:
    if not path.exists():
        raise InputError(f"{path}: no such file or directory.")
    if path.is_dir():
        image = path / IMAGE_FILE
        if not image.is_file():
            raise InputError(f"{path}: no {IMAGE_FILE} here; is this a baker artifact directory?")
        sbom = path / SBOM_FILE
        return _Side(path, image, sbom if sbom.is_file() else None, _digest(image))
    if not path.is_file():
        raise InputError(f"{path}: not a regular file or an artifact directory.")
    return _Side(path, path, None, _digest(path))


def _digest(image: Path) -> str:
    try:
        return f"sha256:{sha256_file(image)}"
    except OSError as e:
        raise InputError(f"{image}: cannot read it ({e.strerror}).") from None


def _image_info(image: Path) -> dict[str, Any]:
    try:
        info = json.loads(tools.run(["qemu-img", "info", "--output=json", "--", _qemu(image)]))
    except (BuildError, ValueError) as e:
        raise InputError(f"{image}: qemu-img cannot read it as a disk image ({e}).") from None
    return info if isinstance(info, dict) else {}


def _qemu(image: Path) -> Path:
    # qemu-img reads "name:rest" as a protocol ("nbd:", "json:", ...); an absolute path never is.
    return image.absolute()


def _packages(a: _Side, b: _Side) -> tuple[tuple[PackageChange, ...], bool]:
    if a.sbom is None or b.sbom is None:
        return (), False
    return _package_changes(_sbom_packages(a.sbom), _sbom_packages(b.sbom)), True


def _sbom_packages(path: Path) -> set[tuple[str, str, str]]:
    try:
        doc = json.loads(path.read_bytes())
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: not a readable JSON SBOM ({e}).") from None
    if not isinstance(doc, dict):
        raise InputError(f"{path}: not a CycloneDX SBOM (the top level is no JSON object).")
    return cyclonedx_packages(doc)


def _package_changes(
    old: set[tuple[str, str, str]], new: set[tuple[str, str, str]]
) -> tuple[PackageChange, ...]:
    def by_name(pkgs: set[tuple[str, str, str]]) -> dict[str, dict[str, str]]:
        out: dict[str, dict[str, str]] = {}
        for name, version, arch in pkgs:
            out.setdefault(name, {})[arch] = version
        return out

    a, b = by_name(old), by_name(new)
    changes: list[PackageChange] = []
    for name in sorted(a.keys() | b.keys()):
        va, vb = a.get(name, {}), b.get(name, {})
        if len(va) <= 1 and len(vb) <= 1:
            # The usual case, one architecture per name: an arch change (amd64 -> all) is
            # still one package changing, not one removed and another added.
            (arch_a, ver_a), (arch_b, ver_b) = _only(va), _only(vb)
            if ver_a == ver_b and arch_a != arch_b and ver_a is not None:
                ver_a, ver_b = f"{ver_a} ({arch_a})", f"{ver_b} ({arch_b})"
            if ver_a != ver_b:
                changes.append(PackageChange(name, ver_a, ver_b))
            continue
        # Multiarch (libc6:amd64 and libc6:i386): each architecture is its own package.
        for arch in sorted(va.keys() | vb.keys()):
            if va.get(arch) != vb.get(arch):
                changes.append(PackageChange(f"{name}:{arch}", va.get(arch), vb.get(arch)))
    return tuple(changes)


def _only(versions: dict[str, str]) -> tuple[str | None, str | None]:
    return next(iter(versions.items()), (None, None))


# -- disks -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Opened:
    root: Path
    info: dict[str, Any]
    table: dict[str, Any]
    superblock: dict[str, str]


def _open(side: _Side, name: str, work: Path, stack: contextlib.ExitStack) -> _Opened:
    info = _image_info(side.image)
    raw = work / f"{name}.raw"
    fmt = str(info.get("format") or "raw")
    # The probed format is passed on explicitly, so qemu-img never re-guesses it differently.
    tools.run(["qemu-img", "convert", "-q", "-f", fmt, "-O", "raw", "--", _qemu(side.image), raw])
    stack.callback(_detach_loops, raw)
    table = _partition_table(raw, side.image)
    start, size = _root_partition(table, side.image)
    fs_type = _fs_type(raw, start, size)
    if fs_type not in _EXT_TYPES:
        found = f"found {fs_type}" if fs_type else "found nothing it recognises"
        raise InputError(f"{side.image}: its root partition holds no ext4 filesystem ({found}).")
    mountpoint = work / f"{name}.mnt"
    mountpoint.mkdir()
    # Registered before mounting: an interrupt can land after the mount took effect.
    stack.callback(_unmount, mountpoint)
    # noload: the journal is never replayed, so a read-only mount writes nothing at all.
    tools.run(
        [
            "mount",
            "-t",
            "ext4",
            "-o",
            f"ro,noload,loop,offset={start},sizelimit={size}",
            raw,
            mountpoint,
        ]
    )
    # dumpe2fs reads "file?offset=" names as NAME=value tags, so it is pointed at the loop
    # device the mount set up instead.
    device = tools.run(["findmnt", "-n", "-o", "SOURCE", "--mountpoint", mountpoint]).strip()
    superblock = _superblock(device)
    return _Opened(mountpoint, info, table, superblock)


def _partition_table(raw: Path, image: Path) -> dict[str, Any]:
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


def _unmount(mountpoint: Path) -> None:
    if mountpoint.is_mount():
        try:
            tools.run(["umount", mountpoint])
        except BuildError:
            # Still busy (something outside holds a file open): detach it from the tree now,
            # so the directory can go; the kernel frees the loop device when the last user
            # lets go.
            tools.run(["umount", "--lazy", mountpoint])
    mountpoint.rmdir()


def _detach_loops(raw: Path) -> None:
    # `mount -o loop` frees its device on unmount, but not always after a failed mount; a
    # device left on our file would pin it after the directory is removed.
    if not raw.exists():
        return
    out = tools.run(["losetup", "--noheadings", "--output", "NAME", "--associated", raw])
    for device in out.split():
        with contextlib.suppress(BuildError):
            tools.run(["losetup", "--detach", device])


def _remove(work: Path) -> None:
    mounted = [p for p in work.iterdir() if p.is_mount()] if work.exists() else []
    if mounted:
        # Removing files under a live mount would reach into the image (or fail on it).
        raise BuildError(f"{mounted[0]} is still mounted; unmount it and remove {work}.")
    shutil.rmtree(work)


# -- disk metadata ---------------------------------------------------------------------------


def _disk_changes(a: _Opened, b: _Opened) -> list[str]:
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


# -- file trees ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Entry:
    type: str  # "file", "dir", "symlink", "char", "block", "fifo", "socket"
    mode: int
    uid: int
    gid: int
    size: int
    mtime_ns: int
    nlink: int
    rdev: int
    target: str | None
    xattrs: tuple[tuple[str, bytes], ...]


_TYPES = (
    (stat.S_ISREG, "file"),
    (stat.S_ISDIR, "dir"),
    (stat.S_ISLNK, "symlink"),
    (stat.S_ISCHR, "char"),
    (stat.S_ISBLK, "block"),
    (stat.S_ISFIFO, "fifo"),
    (stat.S_ISSOCK, "socket"),
)


def _entry(path: str, st: os.stat_result) -> _Entry:
    kind = next((name for test, name in _TYPES if test(st.st_mode)), "unknown")
    return _Entry(
        type=kind,
        mode=stat.S_IMODE(st.st_mode),
        uid=st.st_uid,
        gid=st.st_gid,
        size=st.st_size,
        mtime_ns=st.st_mtime_ns,
        nlink=st.st_nlink,
        rdev=st.st_rdev,
        target=os.readlink(path) if kind == "symlink" else None,
        xattrs=_xattrs(path),
    )


def _xattrs(path: str) -> tuple[tuple[str, bytes], ...]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return ()  # ENOTSUP on special files
    values = []
    for name in sorted(names):
        try:
            values.append((name, os.getxattr(path, name, follow_symlinks=False)))
        except OSError:
            continue
    return tuple(values)


def _walk(root: Path) -> dict[str, _Entry]:
    """Every entry under `root` by its image path ("/", "/etc", ...), symlinks not followed
    and other filesystems not entered."""
    top = os.lstat(root)
    entries = {"/": _entry(str(root), top)}
    stack: list[tuple[str, str]] = [(str(root), "")]
    while stack:
        directory, rel = stack.pop()
        with os.scandir(directory) as it:
            children = sorted(it, key=lambda e: e.name)
        subdirs = []
        for child in children:
            st = child.stat(follow_symlinks=False)
            path = f"{rel}/{child.name}"
            entries[path] = _entry(child.path, st)
            if stat.S_ISDIR(st.st_mode) and st.st_dev == top.st_dev:
                subdirs.append((child.path, path))
        stack.extend(reversed(subdirs))
    return entries


def _path_key(path: str) -> list[str]:
    # Component-wise, so a directory's entries follow it directly ("/a", "/a/b", "/a.b").
    return path.split("/")


def _file_changes(ra: Path, rb: Path) -> list[FileChange]:
    ea, eb = _walk(ra), _walk(rb)
    out: list[FileChange] = []
    for path in sorted(ea.keys() | eb.keys(), key=_path_key):
        x, y = ea.get(path), eb.get(path)
        if x is None and y is not None:
            out.append(FileChange(path, "added", _describe(y)))
        elif y is None and x is not None:
            out.append(FileChange(path, "removed", _describe(x)))
        elif x is not None and y is not None:
            change = _compare(path, x, y, ra, rb)
            if change is not None:
                out.append(change)
    return out


def _describe(e: _Entry) -> tuple[str, ...]:
    if e.type == "file":
        what = f"{e.size} bytes"
    elif e.type == "symlink":
        what = f"symlink -> {e.target}"
    elif e.type in ("char", "block"):
        what = f"{e.type} device {os.major(e.rdev)}:{os.minor(e.rdev)}"
    else:
        what = e.type
    return (what, f"mode {e.mode:04o}", f"uid {e.uid}", f"gid {e.gid}")


def _inside(root: Path, path: str) -> Path:
    return root / path.lstrip("/") if path != "/" else root


def _compare(path: str, x: _Entry, y: _Entry, ra: Path, rb: Path) -> FileChange | None:
    content: list[str] = []
    if x.type != y.type:
        content.append(f"type {x.type} -> {y.type}")
    elif x.type == "symlink" and x.target != y.target:
        content.append(f"symlink {x.target} -> {y.target}")
    elif x.type == "file":
        if x.size != y.size:
            content.append(f"size {x.size} -> {y.size}")
        else:
            ha, hb = sha256_file(_inside(ra, path)), sha256_file(_inside(rb, path))
            if ha != hb:
                content.append(f"sha256 {ha[:12]}… -> {hb[:12]}…")
    elif x.type in ("char", "block") and x.rdev != y.rdev:
        old = f"{os.major(x.rdev)}:{os.minor(x.rdev)}"
        content.append(f"device {old} -> {os.major(y.rdev)}:{os.minor(y.rdev)}")
    meta: list[str] = []
    if x.mode != y.mode:
        meta.append(f"mode {x.mode:04o} -> {y.mode:04o}")
    if x.uid != y.uid:
        meta.append(f"uid {x.uid} -> {y.uid}")
    if x.gid != y.gid:
        meta.append(f"gid {x.gid} -> {y.gid}")
    if x.mtime_ns != y.mtime_ns:
        meta.append(f"mtime {_iso(x.mtime_ns)} -> {_iso(y.mtime_ns)}")
    # A directory's link count follows its subdirectories, which are reported themselves.
    if x.type == y.type == "file" and x.nlink != y.nlink:
        meta.append(f"links {x.nlink} -> {y.nlink}")
    xa, xb = dict(x.xattrs), dict(y.xattrs)
    for name in sorted(xa.keys() | xb.keys()):
        if name not in xb:
            meta.append(f"xattr {name} removed")
        elif name not in xa:
            meta.append(f"xattr {name} added")
        elif xa[name] != xb[name]:
            meta.append(f"xattr {name} changed")
    if content:
        return FileChange(path, "changed", (*content, *meta))
    if meta:
        return FileChange(path, "metadata", tuple(meta))
    return None


def _iso(ns: int) -> str:
    seconds, fraction = divmod(ns, 1_000_000_000)
    try:
        text = datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
    except (OverflowError, OSError, ValueError):
        return f"@{seconds}"
    return f"{text}.{fraction:09d}Z" if fraction else f"{text}Z"


# -- the comparison --------------------------------------------------------------------------


@contextlib.contextmanager
def _scratch(workdir: Path | None) -> Iterator[Path]:
    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="baker-diff-", dir=workdir))
    try:
        yield work
    finally:
        _remove(work)


def diff(a: Path, b: Path, workdir: Path | None = None) -> Diff:
    """Compare two artifact directories (image.qcow2, and sbom.cdx.json for packages) or two
    image files (qcow2 or raw), without booting them.

    Each image is converted to a sparse raw file in a temporary directory under `workdir`
    (the system's temporary directory by default), its root partition (GPT type root x86-64,
    else the largest Linux partition) is mounted read-only, and the two trees are compared.
    Everything mounted or written is undone before this returns or raises. Identical digests
    return at once, without mounting. Bad input raises InputError.
    """
    sa, sb = _side(a), _side(b)
    packages, compared = _packages(sa, sb)
    if sa.digest == sb.digest:
        # Same bytes, so same everything; but what is no disk image at all is still refused.
        if _image_info(sa.image).get("format") == "raw":
            _partition_table(sa.image, sa.image)
        return Diff(str(a), str(b), True, packages, (), (), sa.digest, sb.digest, compared)
    with _scratch(workdir) as work, contextlib.ExitStack() as stack:
        oa = _open(sa, "a", work, stack)
        ob = _open(sb, "b", work, stack)
        files = _file_changes(oa.root, ob.root)
        disk = _disk_changes(oa, ob)
    return Diff(
        str(a), str(b), False, packages, tuple(files), tuple(disk), sa.digest, sb.digest, compared
    )


# -- rendering -------------------------------------------------------------------------------


def _show(line: str) -> str:
    # File names are bytes: undecodable ones and control characters must not garble the
    # terminal or forge extra lines.
    text = line.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def render(d: Diff, limit: int = 200) -> str:
    lines: list[str] = []
    if d.identical:
        lines.append(f"identical: {d.a} and {d.b} are the same image ({d.a_digest})")
    else:
        lines.append(f"different: {d.a} ({d.a_digest}) -> {d.b} ({d.b_digest})")
    if d.packages_compared:
        added = [p for p in d.packages if p.old is None]
        removed = [p for p in d.packages if p.new is None]
        changed = [p for p in d.packages if p.old is not None and p.new is not None]
        lines.append(f"packages: +{len(added)} -{len(removed)} ~{len(changed)}")
        for p in d.packages:
            if p.old is None:
                lines.append(f"  + {p.name} {p.new}")
            elif p.new is None:
                lines.append(f"  - {p.name} {p.old}")
            else:
                lines.append(f"  ~ {p.name} {p.old} -> {p.new}")
    else:
        lines.append(f"packages: not compared (needs {SBOM_FILE} on both sides)")
    counts = {kind: sum(f.kind == kind for f in d.files) for kind in _MARKS}
    lines.append(
        f"files: +{counts['added']} -{counts['removed']} ~{counts['changed']} m{counts['metadata']}"
    )
    for f in d.files[:limit]:
        lines.append(f"  {_file_line(f)}")
    if len(d.files) > limit:
        lines.append(f"  … and {len(d.files) - limit} more")
    lines.append(f"disk: {len(d.disk)} difference{'' if len(d.disk) == 1 else 's'}")
    lines.extend(f"  {line}" for line in d.disk)
    return "\n".join(_show(line) for line in lines) + "\n"


_MARKS = {"added": "+", "removed": "-", "changed": "~", "metadata": "m"}


def _file_line(f: FileChange) -> str:
    mark = _MARKS.get(f.kind, "?")
    if f.kind == "added":
        return f"{mark} {f.path} ({f.details[0]})" if f.details else f"{mark} {f.path}"
    if f.kind == "removed":
        return f"{mark} {f.path}"
    return f"{mark} {f.path}: {', '.join(f.details)}"

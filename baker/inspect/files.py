"""What `baker diff` says about files: two mounted root trees walked and compared entry by
entry (type, content, mode, owner, mtime, links, xattrs)."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from baker.hashing import sha256_file


@dataclass(frozen=True)
class FileChange:
    path: str
    kind: str  # "added" | "removed" | "changed" | "metadata"
    details: tuple[str, ...]


@dataclass(frozen=True)
class Entry:
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


def _entry(path: str, st: os.stat_result) -> Entry:
    kind = next((name for test, name in _TYPES if test(st.st_mode)), "unknown")
    return Entry(
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


def walk(root: Path) -> dict[str, Entry]:
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


def compare(ra: Path, rb: Path) -> list[FileChange]:
    """Every difference from the tree at `ra` to the tree at `rb`, in path order."""
    ea, eb = walk(ra), walk(rb)
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


def _describe(e: Entry) -> tuple[str, ...]:
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


def _compare(path: str, x: Entry, y: Entry, ra: Path, rb: Path) -> FileChange | None:
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

"""`baker diff`: what differs between two images, read offline without booting either.

Each image is converted to a sparse raw file, its root partition is loop-mounted read-only, and
the two file trees are compared entry by entry (files); packages come from the artifacts' SBOMs
(packages), and disk-level identity (GPT GUIDs, filesystem UUID, hash seed, ...) from the
partition table and the ext4 superblock (disk), because two images can hold the same files and
still not be the same bytes. This module holds the answer, the comparison and its rendering.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from baker import artifact
from baker.artifact import SBOM_CDX
from baker.errors import InputError
from baker.hashing import sha256_file

# Modules, not names: tests replace disk.open_image and files.walk to watch the comparison.
from baker.inspect import disk, files, packages
from baker.inspect.files import FileChange
from baker.inspect.packages import PackageChange

__all__ = ["Diff", "FileChange", "PackageChange", "diff", "render"]

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


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
        image = artifact.image_dir(path) / artifact.IMAGE
        sbom = path / SBOM_CDX
        return _Side(path, image, sbom if sbom.is_file() else None, _digest(image))
    if not path.is_file():
        raise InputError(f"{path}: not a regular file or an artifact directory.")
    return _Side(path, path, None, _digest(path))


def _digest(image: Path) -> str:
    try:
        return f"sha256:{sha256_file(image)}"
    except OSError as e:
        raise InputError(f"{image}: cannot read it ({e.strerror}).") from None


# -- the comparison --------------------------------------------------------------------------


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
    package_changes, compared = packages.compare(sa.sbom, sb.sbom)
    if sa.digest == sb.digest:
        # Same bytes, so same everything; but what is no disk image at all is still refused.
        if disk.image_info(sa.image).get("format") == "raw":
            disk.partition_table(sa.image, sa.image)
        return Diff(str(a), str(b), True, package_changes, (), (), sa.digest, sb.digest, compared)
    with disk.scratch(workdir) as work, contextlib.ExitStack() as stack:
        oa = disk.open_image(sa.image, "a", work, stack)
        ob = disk.open_image(sb.image, "b", work, stack)
        file_changes = files.compare(oa.root, ob.root)
        disk_changes = disk.compare(oa, ob)
    return Diff(
        str(a),
        str(b),
        False,
        package_changes,
        tuple(file_changes),
        tuple(disk_changes),
        sa.digest,
        sb.digest,
        compared,
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
        lines.append(f"packages: not compared (needs {SBOM_CDX} on both sides)")
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

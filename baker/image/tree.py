"""A disk's root filesystem as a canonical tar: read through a read-only loop mount,
generalized (baker.image.generalize), written with sorted entries, numeric owners and clamped
times. The capture step makes the published tree this way; a parent image's tree is read back
the same way for a child built on it."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from baker.edge import mounts, tools
from baker.image import disk, generalize
from baker.image.packages import parse_status

TAR_CANONICAL = [
    "--format=pax",
    "--numeric-owner",
    "--xattrs",
    "--xattrs-include=*",
    "--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime",
    "--clamp-mtime",
]


@dataclass(frozen=True)
class Captured:
    entries: int
    dpkg_status: str  # the image's package database, for the package list and SBOM
    copyrights: dict[str, str]  # package -> its /usr/share/doc/<package>/copyright text


# Files to add after the tree: given the mounted tree and a directory to write them in,
# returns their names there (`./rel`, parents first).
Extra = Callable[[Path, Path], list[str]]


def to_tar(
    machine_disk: Path,
    tar: Path,
    workdir: Path,
    source_date_epoch: int,
    extra: Extra | None = None,
    rules_for: Callable[[Path], tuple[generalize.Rule, ...]] | None = None,
) -> Captured:
    """Write the generalized tree of `machine_disk` (any format qemu-img reads, in baker's
    layout) to `tar`, and what `extra` adds after it; `rules_for` the mounted tree gives
    the generalize rules, where they depend on what is in it."""
    raw = workdir / "captured.raw"
    tools.run(["qemu-img", "convert", "-q", "-O", "raw", machine_disk, raw])
    try:
        with mounts.read_only(raw, workdir / "mnt", disk.root_offset()) as root:
            rules = rules_for(root) if rules_for else generalize.RULES
            return from_root(root, tar, workdir, source_date_epoch, extra, rules)
    finally:
        raw.unlink(missing_ok=True)


def from_root(
    root: Path,
    tar: Path,
    workdir: Path,
    source_date_epoch: int,
    extra: Extra | None = None,
    rules: tuple[generalize.Rule, ...] = generalize.RULES,
) -> Captured:
    """Write the generalized tree mounted at `root` to `tar` (leaving out what `rules`
    match), and what `extra` adds after it."""
    names = list(generalize.walk(root, rules))
    dpkg_status = (root / "var/lib/dpkg/status").read_text(errors="replace")
    copyrights = _copyrights(root, dpkg_status)
    added = extra(root, workdir / "extra") if extra else []
    listing = workdir / "capture.list"
    listing.write_bytes(b"".join(os.fsencode(n) + b"\0" for n in names))
    tools.run(
        [
            "tar",
            "--create",
            f"--file={tar}",
            f"--directory={root}",
            *TAR_CANONICAL,
            f"--mtime=@{source_date_epoch}",
            "--no-recursion",
            "--null",
            f"--files-from={listing}",
        ]
    )
    # The emptied files go back in, empty, after everything else.
    layer = workdir / "layer"
    for rel in generalize.EMPTIED:
        f = layer / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(b"")
        f.chmod(0o444)
    _append(tar, layer, [f"./{rel}" for rel in generalize.EMPTIED], source_date_epoch)
    if added:
        _append(tar, workdir / "extra", added, source_date_epoch)
    return Captured(len(names) + len(generalize.EMPTIED) + len(added), dpkg_status, copyrights)


def _append(tar: Path, directory: Path, names: list[str], source_date_epoch: int) -> None:
    tools.run(
        [
            "tar",
            "--append",
            f"--file={tar}",
            f"--directory={directory}",
            *TAR_CANONICAL,
            f"--mtime=@{source_date_epoch}",
            "--owner=0",
            "--group=0",
            "--no-recursion",
            *names,
        ]
    )


def _copyrights(root: Path, dpkg_status: str) -> dict[str, str]:
    """Each installed package's copyright file, read inside the image's tree only (a doc
    directory may be a link to another package's; it must not lead out of the image)."""
    out = {}
    for pkg in parse_status(dpkg_status):
        path = root / "usr/share/doc" / pkg.name / "copyright"
        try:
            resolved = path.resolve()
            if resolved.is_relative_to(root) and resolved.is_file():
                out[pkg.name] = resolved.read_text(errors="replace")[:262144]
        except OSError:
            continue
    return out

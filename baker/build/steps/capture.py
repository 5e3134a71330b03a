"""The capture step: from the stopped build machine's disk to a canonical root tar.

The machine's disk is read through a read-only loop mount, generalized (baker.image.generalize),
and written out as a tar with sorted entries, numeric owners and clamped times. The published
disk is then made from that tar like the base was, so nothing of the build machine's disk
layout (free-block order, journal, timestamps of the run) reaches the image.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

from baker.backends.base import DiskImage
from baker.build.runner import Step
from baker.build.state import BuildState, Context, need
from baker.edge import mounts, tools
from baker.hashing import content_key
from baker.image import disk, generalize
from baker.image.packages import parse_status

CAPTURED_TAR = "captured.tar"

_TAR_CANONICAL = [
    "--format=pax",
    "--numeric-owner",
    "--xattrs",
    "--xattrs-include=*",
    "--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime",
    "--clamp-mtime",
]


class Capture(Step):
    name = "capture"

    def describe(self, ctx: Context) -> str:
        return "generalize and re-pack the filesystem"

    def key(self, ctx: Context, state: BuildState, previous: str | None) -> str:
        config = {
            "rules": [r.pattern for r in generalize.RULES],
            "emptied": list(generalize.EMPTIED),
            "name": ctx.spec.name,
            "source_date_epoch": ctx.source_date_epoch,
            "tools": tools.versions("tar", "qemu-img"),
            "code": self.code_digest(),
        }
        return content_key("capture", config, previous)

    def run(self, ctx: Context, state: BuildState, cleanup: contextlib.ExitStack) -> None:
        handed = need(state.machine, "the build machine").hand_back()
        if not isinstance(handed, DiskImage):
            raise RuntimeError(f"{ctx.backend.kind} handed back {handed!r}, not a disk")
        state.captured_tar = ctx.work / CAPTURED_TAR
        captured = to_tar(handed.path, state.captured_tar, ctx.work, ctx.source_date_epoch)
        handed.path.unlink()
        state.dpkg_status = captured.dpkg_status
        state.packages = parse_status(captured.dpkg_status)
        state.copyrights = captured.copyrights


@dataclass(frozen=True)
class Captured:
    entries: int
    dpkg_status: str  # the image's package database, for the package list and SBOM
    copyrights: dict[str, str]  # package -> its /usr/share/doc/<package>/copyright text


def to_tar(machine_disk: Path, tar: Path, workdir: Path, source_date_epoch: int) -> Captured:
    """Write the generalized tree of `machine_disk` to `tar`."""
    raw = workdir / "captured.raw"
    tools.run(["qemu-img", "convert", "-q", "-O", "raw", machine_disk, raw])
    try:
        with mounts.read_only(raw, workdir / "mnt", disk.root_offset()) as root:
            names = list(generalize.walk(root))
            dpkg_status = (root / "var/lib/dpkg/status").read_text(errors="replace")
            copyrights = _copyrights(root, dpkg_status)
            listing = workdir / "capture.list"
            listing.write_bytes(b"".join(os.fsencode(n) + b"\0" for n in names))
            tools.run(
                [
                    "tar",
                    "--create",
                    f"--file={tar}",
                    f"--directory={root}",
                    *_TAR_CANONICAL,
                    f"--mtime=@{source_date_epoch}",
                    "--no-recursion",
                    "--null",
                    f"--files-from={listing}",
                ]
            )
    finally:
        raw.unlink(missing_ok=True)
    # The emptied files go back in, empty, after everything else.
    layer = workdir / "layer"
    for rel in generalize.EMPTIED:
        f = layer / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(b"")
        f.chmod(0o444)
    tools.run(
        [
            "tar",
            "--append",
            f"--file={tar}",
            f"--directory={layer}",
            *_TAR_CANONICAL,
            f"--mtime=@{source_date_epoch}",
            "--owner=0",
            "--group=0",
            "--no-recursion",
            *(f"./{rel}" for rel in generalize.EMPTIED),
        ]
    )
    return Captured(len(names) + len(generalize.EMPTIED), dpkg_status, copyrights)


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

"""The capture step: from the stopped build machine's disk to a canonical root tar.

The machine's disk is read through a read-only loop mount, generalized (baker.image.generalize),
and written out as a tar with sorted entries, numeric owners and clamped times. The published
disk is then made from that tar like the base was, so nothing of the build machine's disk
layout (free-block order, journal, timestamps of the run) reaches the image.
"""

from __future__ import annotations

import contextlib

from baker.backends.base import DiskImage
from baker.build import vendor
from baker.build.runner import Step
from baker.build.state import BuildState, Context, need
from baker.edge import tools
from baker.hashing import content_key
from baker.image import generalize
from baker.image.packages import parse_status
from baker.image.tree import to_tar

CAPTURED_TAR = "captured.tar"


class Capture(Step):
    name = "capture"

    def describe(self, ctx: Context) -> str:
        return "generalize and re-pack the filesystem"

    def key(self, ctx: Context, state: BuildState, previous: str | None) -> str:
        config = {
            "rules": [r.pattern for r in generalize.RULES],
            "vendor": bool(ctx.spec.cloud_image),
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
        # On a vendor's image, cloud-init wrote the build key into root's SSH files.
        restore = (vendor.restore_root_ssh, vendor.capture_rules) if ctx.spec.cloud_image else ()
        captured = to_tar(handed.path, state.captured_tar, ctx.work, ctx.source_date_epoch,
                          *restore)  # fmt: skip
        handed.path.unlink()
        state.dpkg_status = captured.dpkg_status
        state.packages = parse_status(captured.dpkg_status)
        state.copyrights = captured.copyrights

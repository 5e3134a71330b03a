"""The image step of a build that takes a vendor's disk as it is (base.capture: as-is): the
stopped machine's disk, generalized and trimmed on the machine itself (its free space reads as
zeros, and is left out), flattened into the published qcow2 with its digests. It is not
reproducible: the filesystem's own layout (free-block order, journal, the run's times) is in
it, and build.json says so."""

from __future__ import annotations

import contextlib

from baker.artifact import IMAGE
from baker.backends.base import DiskImage
from baker.build.runner import Step
from baker.build.state import BuildState, Context, need
from baker.build.steps.image import published, to_image
from baker.edge import tools

WHY = (
    "base.capture: as-is: the vendor's disk as it is, with its filesystem's own layout and "
    "the build's times in it"
)


class ImageAsIs(Step):
    name = "image"

    def describe(self, ctx: Context) -> str:
        return "the disk as it is, qcow2, digest"

    def run(self, ctx: Context, state: BuildState, cleanup: contextlib.ExitStack) -> None:
        handed = need(state.machine, "the build machine").hand_back()
        if not isinstance(handed, DiskImage):
            raise RuntimeError(f"{ctx.backend.kind} handed back {handed!r}, not a disk")
        raw = ctx.work / "image.raw"
        # Read through the overlay's backing chain; what reads as zeros stays a hole.
        tools.run(["qemu-img", "convert", "-q", "-f", "qcow2", "-O", "raw", handed.path, raw])
        handed.path.unlink()
        size = raw.stat().st_size
        state.image = to_image(raw, ctx.work / IMAGE, ctx.spec.recipe.base.compression)
        published(ctx, state, state.image, size, as_is=WHY)

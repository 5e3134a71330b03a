"""The base step of a build that takes a vendor's cloud image as it is (base.capture: as-is):
the image fetched and checked as for a re-make (baker.build.vendor), and its disk itself,
raw and grown to base.disk_size_mib, is what the build machine boots, through the image's own
bootloader under BIOS. cloud-init grows the root into the larger disk at the first boot, as it
does on a cloud. Cached under its key, as a re-made disk is."""

from __future__ import annotations

import contextlib
import os
from typing import Any

from baker.backends.base import BaseDisk
from baker.build import vendor
from baker.build.runner import Saved, Step
from baker.build.state import BasePin, BuildState, Context
from baker.cache import Cache, Entry
from baker.edge import tools
from baker.hashing import content_key

BASE_DISK = "base.raw"


class VendorDisk(Step):
    name = "base"
    cached = True
    code = ("baker.build.vendor", "baker.inspect.disk")

    def describe(self, ctx: Context) -> str:
        return f"the vendor image's disk, as it is ({ctx.spec.cloud_image})"

    def key(self, ctx: Context, state: BuildState, previous: str | None) -> str:
        return content_key("base", vendor.key_config(self.pin_config(ctx)), previous)

    def pin_config(self, ctx: Context) -> dict[str, Any]:
        base = ctx.spec.recipe.base
        return {
            **vendor.pin_config(ctx.spec),
            "capture": base.capture,
            "size_mib": base.disk_size_mib,
            "tools": tools.versions("qemu-img"),
            "code": self.code_digest(),
        }

    def run(self, ctx: Context, state: BuildState, cleanup: contextlib.ExitStack) -> None:
        cache = ctx.opts.cache or Cache()
        with vendor.checked(ctx.spec, cache, ctx.work / "vendor", ctx.reporter.info) as opened:
            pass  # read and checked; unmounted before its raw copy becomes the disk
        disk = ctx.work / BASE_DISK
        opened.raw.rename(disk)
        wanted = ctx.spec.recipe.base.disk_size_mib << 20
        if disk.stat().st_size < wanted:
            os.truncate(disk, wanted)  # sparse: the new space costs nothing until written
        else:
            size = disk.stat().st_size >> 20
            ctx.reporter.info(f"the image's disk ({size} MiB) is kept at its own size")

    def save(self, ctx: Context, state: BuildState) -> Saved:
        return Saved({BASE_DISK: ctx.work / BASE_DISK})

    def load(
        self, ctx: Context, state: BuildState, entry: Entry, cleanup: contextlib.ExitStack
    ) -> None:
        state.start_from = BaseDisk(entry.file(BASE_DISK), seed=True)
        state.base = BasePin(
            config=self.pin_config(ctx), digest=f"sha256:{entry.files[BASE_DISK]['sha256']}"
        )

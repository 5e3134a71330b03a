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
from baker.build.runner import Saved, Step
from baker.build.state import BasePin, BuildState, Context
from baker.build.vendor import obtain, open_tree
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
        # The file's digest decides the disk, wherever it was fetched from.
        config = self.pin_config(ctx)
        config["cloud_image"] = {"sha256": config["cloud_image"]["sha256"]}
        return content_key("base", config, previous)

    def pin_config(self, ctx: Context) -> dict[str, Any]:
        base = ctx.spec.recipe.base
        return {
            "cloud_image": {
                "source": ctx.spec.cloud_image,
                "sha256": f"sha256:{base.sha256}",
                "trust": "the recipe's sha256 pin (the image has no signature)",
            },
            "capture": base.capture,
            "suite": base.suite,
            "arch": base.arch,
            "boot": base.boot,
            "size_mib": base.disk_size_mib,
            "tools": tools.versions("qemu-img"),
            "code": self.code_digest(),
        }

    def run(self, ctx: Context, state: BuildState, cleanup: contextlib.ExitStack) -> None:
        vendor = obtain(ctx.spec, ctx.opts.cache or Cache(), ctx.reporter.info)
        work = ctx.work / "vendor"
        work.mkdir()
        with contextlib.ExitStack() as mounted:
            opened = open_tree(ctx.spec, vendor, work, mounted)
            ctx.reporter.info(f"{vendor.source}: boots under {', '.join(sorted(opened.boots))}")
        # The raw copy the checks read is the disk (nothing wrote to it: mounted read-only).
        disk = ctx.work / BASE_DISK
        (work / "vendor.raw").rename(disk)
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

"""The disk step: the base root tree made into a bootable raw disk (baker.image.disk), cached
under its key. The build machine only ever reads it, through an overlay."""

from __future__ import annotations

import contextlib

from baker.build.runner import Saved, Step
from baker.build.state import BuildState, Context, need
from baker.cache import Entry
from baker.edge import tools
from baker.hashing import code_digest, content_key
from baker.image import disk

BASE_DISK = "base.raw"


class BaseDisk(Step):
    name = "disk"
    cached = True

    def describe(self, ctx: Context) -> str:
        return "bootable base disk"

    def key(self, ctx: Context, state: BuildState, previous: str | None) -> str:
        config = {
            "size_mib": ctx.spec.recipe.base.disk_size_mib,
            # The build machine boots under BIOS, whatever the published image boots with.
            "boot": disk.boot_config("bios"),
            "source_date_epoch": ctx.source_date_epoch,
            "tools": tools.versions("mke2fs", "sfdisk", "grub-mkimage"),
            "baker": code_digest(),
        }
        return content_key("disk", config, previous)

    def run(self, ctx: Context, state: BuildState, cleanup: contextlib.ExitStack) -> None:
        disk.assemble(
            need(state.root_tar, "the root tar"),
            ctx.work / BASE_DISK,
            ctx.spec.recipe.base.disk_size_mib,
            # Identifiers from the root tree's content: the same tree, the same disk.
            disk.DiskIds.derive(f"base:{need(state.base_digest, 'the root tar digest')}"),
            ctx.source_date_epoch,
        )

    def save(self, ctx: Context, state: BuildState) -> Saved:
        # What the record needs of the base step, which a reused disk makes unneeded.
        return Saved({BASE_DISK: ctx.work / BASE_DISK}, {"base_digest": state.base_digest})

    def load(self, ctx: Context, state: BuildState, entry: Entry) -> None:
        state.base_disk = entry.file(BASE_DISK)
        state.base_digest = state.base_digest or entry.meta.get("base_digest")

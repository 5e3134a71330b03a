"""The disk step: the base root tree made into a bootable raw disk (baker.image.disk), cached
under its key. The build machine only ever reads it, through an overlay."""

from __future__ import annotations

import contextlib

from baker.backends.base import BaseDisk
from baker.build.runner import Saved, Step
from baker.build.state import BuildState, Context, need
from baker.cache import Entry
from baker.edge import tools
from baker.hashing import content_key
from baker.image import disk

BASE_DISK = "base.raw"
KERNEL = "vmlinuz"
INITRD = "initrd.img"


class Disk(Step):
    name = "disk"
    cached = True
    carries = True  # the base it was made from: a reused disk makes the base step unneeded
    code = ("baker.image.disk",)

    def describe(self, ctx: Context) -> str:
        return "bootable base disk"

    def key(self, ctx: Context, state: BuildState, previous: str | None) -> str:
        config = {
            "size_mib": ctx.spec.recipe.base.disk_size_mib,
            # The build machine boots under BIOS, whatever the published image boots with.
            "boot": disk.boot_config("bios"),
            "source_date_epoch": ctx.source_date_epoch,
            "tools": tools.versions("mke2fs", "sfdisk", "grub-mkimage"),
            "code": self.code_digest(),
        }
        return content_key("disk", config, previous)

    def run(self, ctx: Context, state: BuildState, cleanup: contextlib.ExitStack) -> None:
        base = need(state.base, "the base")
        disk.assemble(
            need(state.root_tar, "the root tar"),
            ctx.work / BASE_DISK,
            ctx.spec.recipe.base.disk_size_mib,
            # Identifiers from the root tree's content: the same tree, the same disk.
            disk.DiskIds.derive(f"base:{need(base.digest, 'the root tar digest')}"),
            ctx.source_date_epoch,
        )
        disk.boot_files(need(state.root_tar, "the root tar"), ctx.work / KERNEL, ctx.work / INITRD)

    def save(self, ctx: Context, state: BuildState) -> Saved:
        files = {name: ctx.work / name for name in (BASE_DISK, KERNEL, INITRD)}
        return Saved(files)

    def load(
        self, ctx: Context, state: BuildState, entry: Entry, cleanup: contextlib.ExitStack
    ) -> None:
        state.start_from = BaseDisk(
            entry.file(BASE_DISK),
            entry.file(KERNEL),
            entry.file(INITRD),
            seed=ctx.spec.cloud_image is not None,
        )

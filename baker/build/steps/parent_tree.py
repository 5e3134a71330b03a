"""The base step of a child image (base.image): its verified parent image's root tree, read
back from the parent's disk with the build machine's SSH access put back in. A module of its
own: the Debian base's key must not follow the capture's code that this one uses (this one
follows base.py's, where the tree's caching lives)."""

from __future__ import annotations

import contextlib
from typing import Any

from baker.build.state import BuildState, Context, need
from baker.build.steps.base import ROOT_TAR, RootTree
from baker.edge import tools
from baker.hashing import content_key
from baker.image import access, tree


class ParentTree(RootTree):
    """A child's base: its verified parent image's root tree (base.image), read back from
    the parent's disk with the build machine's SSH access put back in (baker.image.access).
    Nothing is made again from packages; the disk step makes the build machine's disk from
    this tree as from a Debian one."""

    code = ("baker.image.tree", "baker.image.access", "baker.image.generalize", "baker/guest")

    def describe(self, ctx: Context) -> str:
        return f"the parent image's tree ({ctx.spec.recipe.base.image})"

    def key(self, ctx: Context, state: BuildState, previous: str | None) -> str:
        return content_key("base", self.pin_config(ctx), previous)

    def pin_config(self, ctx: Context) -> dict[str, Any]:
        base = ctx.spec.recipe.base
        return {
            "parent": need(ctx.parent, "the verified parent image").pin.digest,
            "suite": base.suite,
            "arch": base.arch,
            "source_date_epoch": ctx.source_date_epoch,
            "tools": tools.versions("tar", "qemu-img"),
            "code": self.code_digest(),
        }

    def run(self, ctx: Context, state: BuildState, cleanup: contextlib.ExitStack) -> None:
        parent = need(ctx.parent, "the verified parent image")
        work = ctx.work / "parent"
        work.mkdir()
        tree.to_tar(parent.image, ctx.work / ROOT_TAR, work, ctx.source_date_epoch, access.layer)

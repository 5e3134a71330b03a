"""The base step: what the build machine starts from. For a local backend, a Debian root tree
(mmdebstrap, baker.image.debian) as a tar, cached under its key; for a cloud backend, the base
image it resolves (an AMI), recorded as a pin."""

from __future__ import annotations

import contextlib
from typing import Any

from baker.backends.base import CloudBackend, CloudBase
from baker.build.runner import Saved, Step
from baker.build.state import BasePin, BuildState, Context
from baker.cache import Entry
from baker.edge import tools
from baker.errors import InputError
from baker.hashing import content_key
from baker.image import debian
from baker.image.apt import UnknownPackage

ROOT_TAR = "root.tar"


class RootTree(Step):
    """A base step that makes the root tree the disk step reads, as a tar cached under its
    key: a Debian one (DebianBase), or a parent image's (steps.parent_tree.ParentTree)."""

    name = "base"
    cached = True

    def pin_config(self, ctx: Context) -> dict[str, Any]:
        """What decided the tree, as build.json pins it (`pins.base`)."""
        raise NotImplementedError

    def save(self, ctx: Context, state: BuildState) -> Saved:
        return Saved({ROOT_TAR: ctx.work / ROOT_TAR})

    def load(
        self, ctx: Context, state: BuildState, entry: Entry, cleanup: contextlib.ExitStack
    ) -> None:
        state.root_tar = entry.file(ROOT_TAR)
        state.base = BasePin(
            config=self.pin_config(ctx), digest=f"sha256:{entry.files[ROOT_TAR]['sha256']}"
        )


class DebianBase(RootTree):
    code = ("baker.image.debian", "baker/guest")

    def describe(self, ctx: Context) -> str:
        return "Debian root filesystem (mmdebstrap)"

    def key(self, ctx: Context, state: BuildState, previous: str | None) -> str:
        config = {
            "debian": debian.config(ctx.spec.recipe.base, ctx.locked),
            "tools": tools.versions("mmdebstrap"),
            "code": self.code_digest(),
        }
        return content_key("base", config, previous)

    def run(self, ctx: Context, state: BuildState, cleanup: contextlib.ExitStack) -> None:
        try:
            debian.build(
                ctx.spec.recipe.base,
                ctx.work / ROOT_TAR,
                ctx.opts.cache,
                ctx.work,
                lambda line: ctx.reporter.output("mmdebstrap", line),
                ctx.locked,
            )
        except UnknownPackage as e:
            raise InputError(f"{ctx.spec.where(e.field)}: {e}") from None

    def pin_config(self, ctx: Context) -> dict[str, Any]:
        return debian.config(ctx.spec.recipe.base, ctx.locked)


def cloud(ctx: Context) -> CloudBackend:
    """The build's backend, which the pipeline gave cloud steps only if it is a cloud's."""
    if not isinstance(ctx.backend, CloudBackend):
        raise RuntimeError(f"a cloud step in a build on {ctx.backend.kind}")
    return ctx.backend


class CloudBaseImage(Step):
    """A cloud backend's base image, resolved once (the newest match of a filter, say)."""

    name = "base"
    always = True

    def __init__(self) -> None:
        self._base: CloudBase | None = None

    def resolved(self, ctx: Context) -> CloudBase:
        if self._base is None:
            self._base = cloud(ctx).resolve_base()
        return self._base

    def describe(self, ctx: Context) -> str:
        return f"base image ({ctx.backend.kind})"

    def key(self, ctx: Context, state: BuildState, previous: str | None) -> str:
        return content_key("base", self.resolved(ctx).pin(), previous)

    def run(self, ctx: Context, state: BuildState, cleanup: contextlib.ExitStack) -> None:
        base = self.resolved(ctx)
        state.start_from = base
        state.base = BasePin(cloud=base.pin())
        ctx.reporter.info(f"base image {base.pin()}")

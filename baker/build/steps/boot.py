"""The boot step: a throwaway build machine started by the backend from the base, and a root
session on it the moment it answers."""

from __future__ import annotations

import contextlib

from baker.backends.base import BaseDisk, BuildLabel, CloudBase
from baker.build.runner import Step
from baker.build.state import BuildState, Context, need
from baker.edge.ssh import BuildKeys
from baker.hashing import content_key


class Boot(Step):
    name = "boot"

    def describe(self, ctx: Context) -> str:
        return f"build machine ({ctx.backend.kind}, {ctx.accel}), waiting for SSH"

    def key(self, ctx: Context, state: BuildState, previous: str | None) -> str:
        return content_key("boot", ctx.backend.key_config(), previous)

    def run(self, ctx: Context, state: BuildState, cleanup: contextlib.ExitStack) -> None:
        backend = ctx.backend
        base: BaseDisk | CloudBase
        if backend.starts_from == "debian":
            base = BaseDisk(need(state.base_disk, "the base disk"))
        else:
            base = need(state.cloud_base, "the cloud base image")
        # The keys of every step are known by now: the machine is tagged with them.
        keys = {name: o.key for name, o in state.outcomes.items() if o.key}
        state.label = BuildLabel(state.label.recipe, state.label.build_id, keys)
        state.access = BuildKeys.generate()
        machine = backend.start(base, state.access, ctx.work, state.label)
        cleanup.callback(machine.destroy)
        state.machine = machine
        state.guest = machine.connect(ctx.spec.recipe.backend.ssh_timeout_s)
        cleanup.callback(state.guest.close)

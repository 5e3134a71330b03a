"""The boot step: a throwaway build machine started by the backend from the base, and a root
session on it the moment it answers."""

from __future__ import annotations

import contextlib

from baker.backends.base import BuildLabel
from baker.build.runner import Step
from baker.build.state import BuildState, Context
from baker.edge.ssh import BuildKeys
from baker.hashing import code_digest, content_key


class Boot(Step):
    name = "boot"

    def describe(self, ctx: Context) -> str:
        return f"build machine ({ctx.backend.kind}, {ctx.accel}), waiting for SSH"

    def key(self, ctx: Context, state: BuildState, previous: str | None) -> str:
        config = {
            "backend": ctx.backend.key_config(),
            # The virtual hardware the provisioners run on is the backend's code's to say.
            "code": code_digest(
                type(self).__module__, type(ctx.backend).__module__, "templates/domain.xml.j2"
            ),
        }
        return content_key("boot", config, previous)

    def run(self, ctx: Context, state: BuildState, cleanup: contextlib.ExitStack) -> None:
        # The keys of every step are known by now: the machine is tagged with them.
        keys = {name: o.key for name, o in state.outcomes.items() if o.key}
        state.label = BuildLabel(state.label.recipe, state.label.build_id, keys)
        state.access = BuildKeys.generate()
        start_from = state.start_from
        if start_from is None:
            raise RuntimeError("the pipeline reached the boot step without a base to boot")
        machine = ctx.backend.start(start_from, state.access, ctx.work, state.label)
        cleanup.callback(machine.destroy)
        state.machine = machine
        state.guest = machine.connect(ctx.spec.recipe.backend.ssh_timeout_s)
        cleanup.callback(state.guest.close)

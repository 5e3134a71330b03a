"""The shutdown step: the build machine stopped cleanly, so that its disk (or the cloud's
image of it) is consistent."""

from __future__ import annotations

import contextlib

from baker.build.runner import Step
from baker.build.state import BuildState, Context, need

TIMEOUT_S = 120


class Shutdown(Step):
    name = "shutdown"

    def describe(self, ctx: Context) -> str:
        return "clean power-off"

    def run(self, ctx: Context, state: BuildState, cleanup: contextlib.ExitStack) -> None:
        machine = need(state.machine, "the build machine")
        guest = need(state.guest, "a session")
        state.machine_record = machine.record()
        state.guest = None  # stop() closes it
        machine.stop(guest, TIMEOUT_S)

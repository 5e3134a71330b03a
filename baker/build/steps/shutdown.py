"""The shutdown step: the build machine stopped cleanly, so that its disk (or the cloud's
image of it) is consistent. A cloud machine's package list is read first: its disk is not
here to read afterwards."""

from __future__ import annotations

import contextlib

from baker.build.runner import Step
from baker.build.state import BuildState, Context, need
from baker.errors import BuildError
from baker.image import generalize
from baker.image.packages import parse_status

TIMEOUT_S = 120
DPKG_STATUS = "/var/lib/dpkg/status"


class Shutdown(Step):
    name = "shutdown"

    def describe(self, ctx: Context) -> str:
        return "generalize, clean power-off"

    def run(self, ctx: Context, state: BuildState, cleanup: contextlib.ExitStack) -> None:
        machine = need(state.machine, "the build machine")
        guest = need(state.guest, "a session")
        # A local disk is generalized at capture by the rules, which cover all these
        # commands remove; only a cloud's image, made from the disk as it is, needs them.
        in_guest = generalize.IN_GUEST if ctx.backend.hands_back == "cloud-image" else ()
        for command in in_guest:
            code, tail = guest.run(command, lambda line: ctx.reporter.output("generalize", line),
                                   TIMEOUT_S)  # fmt: skip
            if code != 0:
                last = " | ".join(tail[-5:]) or "no output"
                raise BuildError(f"`{command}` failed on the build machine (exit {code}): {last}")
        if ctx.backend.hands_back == "cloud-image":
            state.dpkg_status = guest.read(DPKG_STATUS).decode(errors="replace")
            state.packages = parse_status(state.dpkg_status)
        state.machine_record = machine.record()
        state.guest = None  # stop() closes it
        machine.stop(guest, TIMEOUT_S)

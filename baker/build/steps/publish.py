"""The publish step: the artifact directory appears in `out/` whole, at once
(baker.artifact.publish). Files the step cache holds are copied, never moved or linked: the
published copy is the user's to change."""

from __future__ import annotations

import contextlib

from baker import artifact
from baker.build.runner import Step
from baker.build.state import BuildState, Context


class Publish(Step):
    name = "publish"

    def describe(self, ctx: Context) -> str:
        return f"{ctx.opts.out / ctx.spec.name}"

    def run(self, ctx: Context, state: BuildState, cleanup: contextlib.ExitStack) -> None:
        cached = {name for name, path in state.files.items() if not path.is_relative_to(ctx.work)}
        state.artifact = artifact.publish(
            ctx.opts.out, ctx.spec.name, state.files, state.known_sha256, copy=cached
        )

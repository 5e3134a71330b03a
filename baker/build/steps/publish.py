"""The publish step: the artifact directory appears in `out/` whole, at once
(baker.artifact.publish). Files the step cache holds are copied, never moved or linked: the
published copy is the user's to change."""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

from baker import artifact
from baker.build.runner import Step
from baker.build.state import BuildState, Context


class Publish(Step):
    name = "publish"

    def describe(self, ctx: Context) -> str:
        return f"{ctx.opts.out / ctx.spec.name}"

    def run(self, ctx: Context, state: BuildState, cleanup: contextlib.ExitStack) -> None:
        staged = ctx.work / "publish"
        staged.mkdir()
        files: dict[str, Path] = {}
        for name, path in state.files.items():
            if path.is_relative_to(ctx.work):
                files[name] = path
            else:
                files[name] = Path(shutil.copyfile(path, staged / name))
        state.artifact = artifact.publish(ctx.opts.out, ctx.spec.name, files, state.known_sha256)
        if state.image is not None:
            state.result = state.image.digest
        elif state.cloud_image is not None:
            state.result = state.cloud_image.ref

"""The image step of a cloud backend: the cloud's image of the stopped machine (an AMI),
cached under its key like a local image, and reused while the cloud still has it."""

from __future__ import annotations

import contextlib
import json

from baker.artifact import AMI, ImageRecord, dump_json
from baker.backends.base import CloudImage
from baker.build.runner import Saved, Step
from baker.build.state import BuildState, Context, Made, need
from baker.build.steps.base import cloud
from baker.cache import Entry
from baker.hashing import content_key


class MakeCloudImage(Step):
    name = "image"
    cached = True
    carries = True

    def __init__(self) -> None:
        self._made: CloudImage | None = None

    def describe(self, ctx: Context) -> str:
        return f"release access, stop, make the {ctx.backend.kind} image"

    def key(self, ctx: Context, state: BuildState, previous: str | None) -> str:
        config = {"backend": ctx.backend.kind, "code": self.code_digest()}
        return content_key("image", config, previous)

    def run(self, ctx: Context, state: BuildState, cleanup: contextlib.ExitStack) -> None:
        made = need(state.machine, "the build machine").hand_back()
        if not isinstance(made, CloudImage):
            raise RuntimeError(f"{ctx.backend.kind} handed back {made!r}, not a cloud image")
        self._made = made

    def save(self, ctx: Context, state: BuildState) -> Saved:
        made = need(self._made, "the cloud image")
        (ctx.work / AMI).write_bytes(dump_json(made.record))
        meta = {
            "cloud": made.cloud,
            "region": made.region,
            "image_id": made.image_id,
            "raw_digest": made.raw_digest,
        }
        return Saved({AMI: ctx.work / AMI}, meta)

    def load(
        self, ctx: Context, state: BuildState, entry: Entry, cleanup: contextlib.ExitStack
    ) -> None:
        m = entry.meta
        record = json.loads(entry.file(AMI).read_text())
        image = CloudImage(m["region"], m["image_id"], m["raw_digest"], record, m["cloud"])
        state.made = Made(
            image=image,
            name=image.ref,
            digest=image.raw_digest,
            signed=AMI,
            record=ImageRecord(ami=record),
            ids={"image": image.raw_digest, "image_id": image.image_id},
            result=image.ref,
        )
        state.files[AMI] = entry.file(AMI)

    def usable(self, ctx: Context, entry: Entry) -> bool:
        m = entry.meta
        image = CloudImage(m["region"], m["image_id"], m.get("raw_digest", ""), {}, m["cloud"])
        if cloud(ctx).image_exists(image):
            return True
        ctx.reporter.info(f"the cached image {image.image_id} is gone from {image.region}")
        return False

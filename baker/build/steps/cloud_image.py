"""The image step of a cloud backend: the cloud's image of the stopped machine (an AMI),
cached under its key like a local image, and reused while the cloud still has it."""

from __future__ import annotations

import contextlib
import json

from baker.artifact import AMI, JUNIT, dump_json
from baker.backends.base import CloudImage as Made
from baker.build.runner import Saved, Step
from baker.build.state import BuildState, Context, TestResults, need
from baker.cache import Entry
from baker.hashing import code_digest, content_key
from baker.image.packages import parse_status

DPKG_STATUS = "dpkg-status"


class CloudImage(Step):
    name = "image"
    cached = True

    def describe(self, ctx: Context) -> str:
        return f"release access, stop, make the {ctx.backend.kind} image"

    def key(self, ctx: Context, state: BuildState, previous: str | None) -> str:
        return content_key("image", {"backend": ctx.backend.kind, "baker": code_digest()}, previous)

    def run(self, ctx: Context, state: BuildState, cleanup: contextlib.ExitStack) -> None:
        made = need(state.machine, "the build machine").hand_back()
        if not isinstance(made, Made):
            raise RuntimeError(f"{ctx.backend.kind} handed back {made!r}, not a cloud image")
        state.cloud_image = made

    def save(self, ctx: Context, state: BuildState) -> Saved:
        made = need(state.cloud_image, "the cloud image")
        (ctx.work / AMI).write_bytes(dump_json(made.record))
        (ctx.work / DPKG_STATUS).write_text(state.dpkg_status)
        meta = {
            "cloud": made.cloud,
            "region": made.region,
            "image_id": made.image_id,
            "machine": state.machine_record,
            "tests": need(state.tests, "the test results").as_dict(),
        }
        files = {AMI: ctx.work / AMI, JUNIT: need(state.junit, "the test results"),
                 DPKG_STATUS: ctx.work / DPKG_STATUS}  # fmt: skip
        return Saved(files, meta)

    def load(self, ctx: Context, state: BuildState, entry: Entry) -> None:
        record = json.loads(entry.file(AMI).read_text())
        state.cloud_image = Made(
            entry.meta["region"], entry.meta["image_id"], record, entry.meta["cloud"]
        )
        state.machine_record = entry.meta["machine"]
        state.tests = TestResults.from_dict(entry.meta["tests"])
        state.junit = entry.file(JUNIT)
        state.dpkg_status = entry.file(DPKG_STATUS).read_text()
        state.packages = parse_status(state.dpkg_status)
        state.files[AMI] = entry.file(AMI)

    def usable(self, ctx: Context, entry: Entry) -> bool:
        made = Made(entry.meta["region"], entry.meta["image_id"], {}, entry.meta["cloud"])
        if ctx.backend.image_exists(made):
            return True
        ctx.reporter.info(f"the cached image {made.image_id} is gone from {made.region}")
        return False

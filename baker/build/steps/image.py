"""The image step: the published disk made again from the captured tree (baker.image.disk),
as qcow2, with its digests. Cached under its key together with what the steps before it
found (the test results, the package database), so an unchanged recipe reuses it whole."""

from __future__ import annotations

import concurrent.futures
import contextlib
import json

from baker.artifact import IMAGE, JUNIT
from baker.build.runner import Saved, Step
from baker.build.state import BuildState, BuiltImage, Context, TestResults, need
from baker.cache import Entry
from baker.edge import tools
from baker.hashing import code_digest, content_key, sha256_file
from baker.image import disk
from baker.image.packages import parse_status

DPKG_STATUS = "dpkg-status"
COPYRIGHTS = "copyrights.json"


class Image(Step):
    name = "image"
    cached = True

    def describe(self, ctx: Context) -> str:
        return "canonical disk, qcow2, digest"

    def key(self, ctx: Context, state: BuildState, previous: str | None) -> str:
        config = {
            "size_mib": ctx.spec.recipe.base.disk_size_mib,
            "ids": f"image:{ctx.spec.name}",
            "boot": ctx.spec.recipe.base.boot,
            "loaders": disk.boot_config(ctx.spec.recipe.base.boot),
            "source_date_epoch": ctx.source_date_epoch,
            "tools": tools.versions(
                "mke2fs", "sfdisk", "grub-mkimage", "qemu-img", "mkfs.fat", "mcopy"
            ),
            "baker": code_digest(),
        }
        return content_key("image", config, previous)

    def run(self, ctx: Context, state: BuildState, cleanup: contextlib.ExitStack) -> None:
        tar = need(state.captured_tar, "the captured tree")
        raw, image = ctx.work / "image.raw", ctx.work / IMAGE
        disk.assemble(
            tar,
            raw,
            ctx.spec.recipe.base.disk_size_mib,
            disk.DiskIds.derive(f"image:{ctx.spec.name}"),
            ctx.source_date_epoch,
            ctx.spec.recipe.base.boot,
        )
        tar.unlink()
        # The raw bytes' digest ties the image to copies in other formats (an AMI's
        # snapshot, a converted disk) whose container bytes differ. Hashed while qemu-img
        # reads the same bytes: one pass over the disk, from the page cache, not two.
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            raw_hash = pool.submit(sha256_file, raw)
            disk.to_qcow2(raw, image)
            raw_digest = f"sha256:{raw_hash.result()}"
        raw.unlink()
        digest = f"sha256:{sha256_file(image)}"
        state.image = BuiltImage(image, digest, raw_digest, image.stat().st_size)

    def save(self, ctx: Context, state: BuildState) -> Saved:
        image = need(state.image, "the image")
        (ctx.work / DPKG_STATUS).write_text(state.dpkg_status)
        (ctx.work / COPYRIGHTS).write_text(json.dumps(state.copyrights, sort_keys=True))
        files = {
            IMAGE: image.path,
            JUNIT: need(state.junit, "the test results"),
            DPKG_STATUS: ctx.work / DPKG_STATUS,
            COPYRIGHTS: ctx.work / COPYRIGHTS,
        }
        meta = {
            "digest": image.digest,
            "raw_digest": image.raw_digest,
            "tests": need(state.tests, "the test results").as_dict(),
            # What the record says of the steps this entry makes unneeded.
            "base_digest": state.base_digest,
        }
        return Saved(files, meta, {IMAGE: image.digest.removeprefix("sha256:")})

    def load(self, ctx: Context, state: BuildState, entry: Entry) -> None:
        path = entry.file(IMAGE)
        digest = f"sha256:{entry.files[IMAGE]['sha256']}"
        state.image = BuiltImage(path, digest, entry.meta["raw_digest"], path.stat().st_size)
        state.junit = entry.file(JUNIT)
        state.tests = TestResults.from_dict(entry.meta["tests"])
        state.dpkg_status = entry.file(DPKG_STATUS).read_text()
        state.copyrights = json.loads(entry.file(COPYRIGHTS).read_text())
        state.packages = parse_status(state.dpkg_status)
        state.known_sha256[IMAGE] = entry.files[IMAGE]["sha256"]
        state.base_digest = state.base_digest or entry.meta.get("base_digest")

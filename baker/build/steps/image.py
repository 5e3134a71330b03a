"""The image step: the published disk made again from the captured tree (baker.image.disk),
as qcow2, with its digests. Cached under its key, carrying what the steps before it found
(the test results, the package database), so an unchanged recipe reuses it whole."""

from __future__ import annotations

import concurrent.futures
import contextlib
from pathlib import Path

from baker.artifact import IMAGE, ImageRecord
from baker.backends.base import DiskImage
from baker.build.runner import Saved, Step
from baker.build.state import BuildState, BuiltImage, Context, Made, need
from baker.cache import Entry
from baker.edge import tools
from baker.hashing import content_key, sha256_file
from baker.image import disk


class Image(Step):
    name = "image"
    cached = True
    carries = True

    def describe(self, ctx: Context) -> str:
        return "canonical disk, qcow2, digest"

    def key(self, ctx: Context, state: BuildState, previous: str | None) -> str:
        config = {
            "size_mib": ctx.spec.recipe.base.disk_size_mib,
            "ids": f"image:{ctx.spec.name}",
            "boot": ctx.spec.recipe.base.boot,
            "compression": ctx.spec.recipe.base.compression,
            "loaders": disk.boot_config(ctx.spec.recipe.base.boot),
            "source_date_epoch": ctx.source_date_epoch,
            "tools": tools.versions(
                "mke2fs", "sfdisk", "grub-mkimage", "qemu-img", "mkfs.fat", "mcopy"
            ),
            "code": self.code_digest(),
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
        state.image = to_image(raw, image, ctx.spec.recipe.base.compression)

    def save(self, ctx: Context, state: BuildState) -> Saved:
        image = need(state.image, "the image")
        meta = {"raw_digest": image.raw_digest}
        return Saved({IMAGE: image.path}, meta, {IMAGE: image.digest.removeprefix("sha256:")})

    def load(
        self, ctx: Context, state: BuildState, entry: Entry, cleanup: contextlib.ExitStack
    ) -> None:
        path = entry.file(IMAGE)
        digest = f"sha256:{entry.files[IMAGE]['sha256']}"
        image = BuiltImage(path, digest, entry.meta["raw_digest"], path.stat().st_size)
        state.image = image
        published(ctx, state, image, ctx.spec.recipe.base.disk_size_mib * 1024 * 1024)


def to_image(raw: Path, image: Path, compression: disk.Compression) -> BuiltImage:
    """The published qcow2 made of the disk `raw` (removed after), with its digests."""
    # The raw bytes' digest ties the image to copies in other formats (an AMI's snapshot, a
    # converted disk) whose container bytes differ. Hashed while qemu-img reads the same
    # bytes: one pass over the disk, from the page cache, not two.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        raw_hash = pool.submit(sha256_file, raw)
        disk.to_qcow2(raw, image, compression)
        raw_digest = f"sha256:{raw_hash.result()}"
    raw.unlink()
    return BuiltImage(image, f"sha256:{sha256_file(image)}", raw_digest, image.stat().st_size)


def published(
    ctx: Context, state: BuildState, image: BuiltImage, virtual_size: int, as_is: str | None = None
) -> None:
    """What every later step needs of the local image `image`: the state's `made`, and the
    file the artifact gets. `as_is`: why the image is not reproducible (a vendor's disk taken
    as it is)."""
    base = ctx.spec.recipe.base
    state.made = Made(
        image=DiskImage(image.path, seed=ctx.spec.cloud_image is not None),
        name=IMAGE,
        digest=image.digest,
        signed=IMAGE,
        record=ImageRecord(
            file=IMAGE,
            digest=image.digest,
            raw_digest=image.raw_digest,
            size=image.size,
            virtual_size=virtual_size,
            format="qcow2",
            compression=base.compression,
            boot=base.boot,
            reproducible=False if as_is else None,
            why_not_reproducible=as_is,
        ),
        ids={"image": image.digest},
        result=image.digest,
    )
    state.files[IMAGE] = image.path
    state.known_sha256[IMAGE] = image.digest.removeprefix("sha256:")

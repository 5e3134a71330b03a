"""`baker publish DIR --to ec2`: a local, reproducible image as an AMI, without S3.

The qcow2 is converted to raw in a temporary directory, and the raw bytes go straight into a
new EBS snapshot through the EBS direct API: 512 KiB blocks, each with its SHA-256 checksum,
all-zero blocks skipped (a new snapshot reads as zeros where nothing was written). The whole
raw image, zeros included, hashes to the raw-content digest the build records, so anyone can
tie the AMI to the signed artifact. Every AWS object is tagged with the image digest, which
is also how a second publish of the same image finds and reuses the AMI instead of making a
duplicate.
"""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import hashlib
import json
import math
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from baker.edge import tools
from baker.edge.aws import (
    Aws,
    api,
    delete_snapshot,
    image_snapshots,
    remove_image,
    tag_spec,
    tags,
    wait,
)
from baker.errors import BuildError, InputError
from baker.hashing import sha256_file

BLOCK = 512 * 1024  # the EBS direct API's one block size
GIB = 1 << 30
THREADS = 8  # blocks in flight; boto3 clients are thread-safe
ROOT_DEVICE = "/dev/xvda"
SNAPSHOT_LIFETIME_MIN = 60  # an unfinished snapshot fails by itself after this long

TAG_DIGEST = "baker:image-digest"
TAG_RAW = "baker:raw-digest"
TAG_RECIPE = "baker:recipe"

_ZERO = bytes(BLOCK)

Log = Callable[[str], None]


def _quiet(_message: str) -> None:
    pass


@dataclass(frozen=True)
class Timeouts:
    """How long each wait may take, in seconds (0: fail at once)."""

    snapshot_s: float = 3600
    image_s: float = 3600
    copy_s: float = 3 * 3600

    @classmethod
    def all(cls, seconds: float) -> Timeouts:
        return cls(seconds, seconds, seconds)


@dataclass(frozen=True)
class Artifact:
    """What publish reads from an artifact directory."""

    directory: Path
    image: Path
    name: str
    digest: str  # sha256:<hex> of image.qcow2
    raw_digest: str | None  # sha256:<hex> of the raw disk, when the build recorded it
    boot: str  # bios or uefi

    @classmethod
    def load(cls, directory: Path) -> Artifact:
        image, record = directory / "image.qcow2", directory / "build.json"
        for f in (image, record):
            if not f.is_file():
                raise InputError(f"{directory}: no {f.name} here: not an artifact directory.")
        try:
            build = json.loads(record.read_text())
            name, info = build["recipe"]["name"], build["image"]
            digest = info["digest"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise InputError(
                f"{record}: not a baker build record ({type(e).__name__}: {e})."
            ) from None
        boot = info.get("boot", "bios")
        if boot not in ("bios", "uefi"):
            raise InputError(f"{record}: image.boot is {boot!r}, expected bios or uefi.")
        return cls(directory, image, name, digest, info.get("raw_digest"), boot)

    def check_digest(self) -> None:
        actual = f"sha256:{sha256_file(self.image)}"
        if actual != self.digest:
            raise InputError(
                f"{self.image} has {actual}, but build.json records {self.digest}: the artifact "
                "was changed after it was built; refusing to publish it."
            )

    @property
    def ami_name(self) -> str:
        return f"{self.name}-{self.digest.removeprefix('sha256:')[:16]}"

    def tags(self, raw_digest: str) -> dict[str, str]:
        return {
            "Name": self.ami_name,
            TAG_RECIPE: self.name,
            TAG_DIGEST: self.digest,
            TAG_RAW: raw_digest,
        }


@dataclass(frozen=True)
class RegionImage:
    region: str
    image_id: str
    snapshot_ids: tuple[str, ...]
    reused: bool
    raw_digest: str | None = None  # as tagged, for one found already published

    def as_dict(self) -> dict[str, Any]:
        return {
            "image_id": self.image_id,
            "snapshot_ids": list(self.snapshot_ids),
            "reused": self.reused,
        }


@dataclass(frozen=True)
class Published:
    image_digest: str
    raw_digest: str
    images: tuple[RegionImage, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "image_digest": self.image_digest,
            "raw_digest": self.raw_digest,
            "images": {i.region: i.as_dict() for i in self.images},
        }


@dataclass
class _Undo:
    """What this publish made so far in one region, removed again if it fails."""

    ec2: Any
    snapshots: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)

    def run(self) -> list[str]:
        left: list[str] = []
        for image in self.images:
            left.extend(remove_image(self.ec2, image, self.snapshots))
        if not self.images:
            for snapshot in self.snapshots:
                left.extend(delete_snapshot(self.ec2, snapshot))
        return left


def publish(
    directory: Path,
    region: str,
    copy_to: tuple[str, ...] = (),
    *,
    aws: Aws | None = None,
    timeouts: Timeouts = Timeouts(),
    log: Log = _quiet,
    work_root: Path | None = None,
) -> Published:
    """Publish the artifact in `directory` as an AMI in `region` (reusing one already
    published for its digest), then in each region of `copy_to`."""
    art = Artifact.load(directory)
    art.check_digest()
    aws = aws or Aws(region)
    primary = _find(aws.ec2(region), region, art, timeouts.image_s, log)
    if primary:
        raw_digest = primary.raw_digest or art.raw_digest or ""
    else:
        primary, raw_digest = _upload_and_register(aws, region, art, timeouts, log, work_root)
    images = [primary]
    for target in dict.fromkeys(copy_to):
        if target != region:
            images.append(_copy(aws, primary, target, art, raw_digest, timeouts, log))
    return Published(art.digest, raw_digest, tuple(images))


def _find(ec2: Any, region: str, art: Artifact, timeout_s: float, log: Log) -> RegionImage | None:
    """This account's AMI for the image's digest in `region`, if there is one (once it is
    available), checked against the raw digest the build recorded."""
    with api(f"look for an AMI of {art.digest} in {region}"):
        found = ec2.describe_images(
            Owners=["self"], Filters=[{"Name": f"tag:{TAG_DIGEST}", "Values": [art.digest]}]
        )["Images"]
    usable = [i for i in found if i.get("State") in ("available", "pending")]
    if not usable:
        return None
    image = min(usable, key=lambda i: (i.get("CreationDate", ""), i["ImageId"]))
    image_id = image["ImageId"]
    values = {t["Key"]: t["Value"] for t in image.get("Tags", [])}
    raw = values.get(TAG_RAW)
    if raw and art.raw_digest and raw != art.raw_digest:
        raise BuildError(
            f"{image_id} in {region} is tagged with image digest {art.digest} but raw digest "
            f"{raw}, while build.json records {art.raw_digest}: not reusing it (check who "
            "tagged it, and deregister it)."
        )
    if image["State"] == "pending":
        what = f"wait for {image_id} in {region} to become available"
        wait(ec2, "image_available", timeout_s, what, ImageIds=[image_id])
    log(f"{art.digest} is already published in {region} as {image_id}: reusing it")
    snapshots = tuple(sorted(image_snapshots(ec2, image_id)))
    return RegionImage(region, image_id, snapshots, reused=True, raw_digest=raw)


def _upload_and_register(
    aws: Aws, region: str, art: Artifact, timeouts: Timeouts, log: Log, work_root: Path | None
) -> tuple[RegionImage, str]:
    ec2 = aws.ec2(region)
    undo = _Undo(ec2)
    try:
        with _raw_copy(art.image, work_root) as raw:
            raw_digest = _check_raw(raw, art, log)
            snapshot = _upload(aws.ebs(region), raw, raw_digest, art, undo, log)
        _tag(ec2, [snapshot], art.tags(raw_digest))
        wait(
            ec2,
            "snapshot_completed",
            timeouts.snapshot_s,
            f"wait for snapshot {snapshot} to complete",
            SnapshotIds=[snapshot],
        )
        image_id = _register(ec2, snapshot, art, raw_digest, undo)
        wait(
            ec2,
            "image_available",
            timeouts.image_s,
            f"wait for image {image_id} to become available",
            ImageIds=[image_id],
        )
    except BaseException:
        _report(undo.run(), log)
        raise
    log(f"published {art.digest} in {region} as {image_id} (snapshot {snapshot})")
    return RegionImage(region, image_id, (snapshot,), False, raw_digest), raw_digest


@contextlib.contextmanager
def _raw_copy(image: Path, work_root: Path | None) -> Iterator[Path]:
    """The image as a raw disk in a temporary directory (sparse; removed afterwards)."""
    root = work_root or Path(os.environ.get("BAKER_WORK_DIR", "/var/tmp"))
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="baker-publish-", dir=root) as tmp:
        raw = Path(tmp) / "image.raw"
        tools.run(["qemu-img", "convert", "-q", "-f", "qcow2", "-O", "raw", image, raw])
        yield raw


def _check_raw(raw: Path, art: Artifact, log: Log) -> str:
    """The raw disk's digest, checked against the build's record before anything is made."""
    raw_digest = f"sha256:{sha256_file(raw)}"
    if art.raw_digest is None:
        log(f"raw-content digest {raw_digest} (build.json records none to check it against)")
    elif raw_digest != art.raw_digest:
        raise BuildError(
            f"{art.image} converts to raw bytes with {raw_digest}, but build.json records "
            f"raw_digest {art.raw_digest}: refusing to publish bytes the build did not make."
        )
    else:
        log(f"raw-content digest {raw_digest} matches build.json")
    return raw_digest


def _upload(ebs: Any, raw: Path, raw_digest: str, art: Artifact, undo: _Undo, log: Log) -> str:
    """A new EBS snapshot holding exactly the bytes of `raw`, which hash to `raw_digest`;
    returns its id."""
    size = raw.stat().st_size
    with api("start an EBS snapshot"):
        snapshot = ebs.start_snapshot(
            VolumeSize=max(1, math.ceil(size / GIB)),
            Description=f"baker {art.name} {art.digest}",
            Tags=tags({TAG_RECIPE: art.name, TAG_DIGEST: art.digest, "Name": art.ami_name}),
            Timeout=SNAPSHOT_LIFETIME_MIN,
        )["SnapshotId"]
    undo.snapshots.append(snapshot)
    log(f"uploading {size // (1 << 20)} MiB into snapshot {snapshot} (zero blocks skipped)")
    sent, written = _put_blocks(ebs, snapshot, raw)
    # What was hashed on the way out is what was sent: a file changed under us shows here.
    if f"sha256:{sent}" != raw_digest:
        raise BuildError(f"the bytes uploaded hash to sha256:{sent}, not {raw_digest}.")
    with api(f"complete snapshot {snapshot}"):
        ebs.complete_snapshot(SnapshotId=snapshot, ChangedBlocksCount=written)
    log(f"snapshot {snapshot}: {written} blocks written")
    return str(snapshot)


def _put_blocks(ebs: Any, snapshot: str, raw: Path) -> tuple[str, int]:
    """Upload every non-zero 512 KiB block of `raw`; returns the sha256 (hex) of all of its
    bytes, read once, and the number of blocks written."""
    whole = hashlib.sha256()
    written = 0
    pool = concurrent.futures.ThreadPoolExecutor(THREADS, thread_name_prefix="ebs-put")
    in_flight: set[concurrent.futures.Future[None]] = set()
    try:
        with raw.open("rb") as f:
            for index, block in enumerate(iter(lambda: f.read(BLOCK), b"")):
                whole.update(block)
                if block == _ZERO[: len(block)]:
                    continue
                padded = block.ljust(BLOCK, b"\0")  # the disk's tail, if not a whole block
                in_flight.add(pool.submit(_put_block, ebs, snapshot, index, padded))
                written += 1
                if len(in_flight) >= 2 * THREADS:
                    done, in_flight = concurrent.futures.wait(
                        in_flight, return_when=concurrent.futures.FIRST_COMPLETED
                    )
                    for future in done:
                        future.result()
        for future in concurrent.futures.as_completed(in_flight):
            future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return whole.hexdigest(), written


def _put_block(ebs: Any, snapshot: str, index: int, data: bytes) -> None:
    checksum = base64.b64encode(hashlib.sha256(data).digest()).decode()
    with api(f"upload block {index} of snapshot {snapshot}"):
        ebs.put_snapshot_block(
            SnapshotId=snapshot,
            BlockIndex=index,
            BlockData=data,
            DataLength=len(data),
            Checksum=checksum,
            ChecksumAlgorithm="SHA256",
        )


def _register(ec2: Any, snapshot: str, art: Artifact, raw_digest: str, undo: _Undo) -> str:
    values = art.tags(raw_digest)
    with api(f"register an AMI from snapshot {snapshot}"):
        image_id = str(
            ec2.register_image(
                Name=art.ami_name,
                Description=f"baker {art.name} {art.digest}",
                Architecture="x86_64",
                VirtualizationType="hvm",
                RootDeviceName=ROOT_DEVICE,
                BlockDeviceMappings=[
                    {
                        "DeviceName": ROOT_DEVICE,
                        "Ebs": {
                            "SnapshotId": snapshot,
                            "DeleteOnTermination": True,
                            "VolumeType": "gp3",
                        },
                    }
                ],
                EnaSupport=True,
                BootMode="legacy-bios" if art.boot == "bios" else "uefi",
                TagSpecifications=[tag_spec("image", values)],
            )["ImageId"]
        )
    undo.images.append(image_id)
    _tag(ec2, [image_id], values)
    return image_id


def _tag(ec2: Any, resources: list[str], values: dict[str, str]) -> None:
    # Also after TagSpecifications: not every EC2-compatible endpoint applies those.
    with api(f"tag {', '.join(resources)}"):
        ec2.create_tags(Resources=resources, Tags=tags(values))


def _copy(
    aws: Aws,
    source: RegionImage,
    region: str,
    art: Artifact,
    raw_digest: str,
    timeouts: Timeouts,
    log: Log,
) -> RegionImage:
    ec2 = aws.ec2(region)
    found = _find(ec2, region, art, timeouts.copy_s, log)
    if found:
        return found
    values = art.tags(raw_digest)
    undo = _Undo(ec2)
    try:
        with api(f"copy {source.image_id} to {region}"):
            image_id = str(
                ec2.copy_image(
                    SourceImageId=source.image_id,
                    SourceRegion=source.region,
                    Name=art.ami_name,
                    Description=f"baker {art.name} {art.digest}",
                    TagSpecifications=[tag_spec("image", values)],
                )["ImageId"]
            )
        undo.images.append(image_id)
        _tag(ec2, [image_id], values)
        wait(
            ec2,
            "image_available",
            timeouts.copy_s,
            f"wait for copy {image_id} in {region} to become available",
            ImageIds=[image_id],
        )
        snapshots = sorted(image_snapshots(ec2, image_id))
        if snapshots:
            _tag(ec2, snapshots, values)
    except BaseException:
        _report(undo.run(), log)
        raise
    log(f"copied to {region} as {image_id}")
    return RegionImage(region, image_id, tuple(snapshots), False, raw_digest)


def _report(leftovers: list[str], log: Log) -> None:
    for item in leftovers:
        log(f"NOT cleaned up: {item}; remove it by hand")

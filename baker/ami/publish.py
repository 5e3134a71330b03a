"""`baker publish DIR --to ec2`: a local, reproducible image as an AMI, without S3.

The image's raw bytes go into a new EBS snapshot through the EBS direct API (baker.ami.ebs),
checked on the way against the raw-content digest the build records, so anyone can tie the
AMI to the signed artifact; the snapshot is registered as an AMI and copied to more regions.
Every AWS object is tagged with the image digest, which is also how a second publish of the
same image finds and reuses the AMI instead of making a duplicate.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from baker import artifact
from baker.ami.ebs import BLOCK, TAG_RAW, raw_copy, upload_snapshot
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

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_ec2.literals import BootModeValuesType

__all__ = ["BLOCK", "TAG_DIGEST", "TAG_RAW", "TAG_RECIPE", "Published", "Timeouts", "publish"]

ROOT_DEVICE = "/dev/xvda"

TAG_DIGEST = "baker:image-digest"
TAG_RECIPE = "baker:recipe"
# The image digests of the parent and its ancestors, nearest first, so `baker prune --ec2`
# keeps the AMIs a kept child was built on. A tag value holds at most 256 characters, three
# digests: a longer line goes on in baker:parent-digests.2, .3, ...
TAG_PARENTS = "baker:parent-digests"
_TAG_VALUE_MAX = 256


def parent_tags(digests: tuple[str, ...]) -> dict[str, str]:
    """The baker:parent-digests tags naming `digests`, in as many tags as they need."""
    values: list[str] = []
    for digest in digests:
        if values and len(values[-1]) + 1 + len(digest) <= _TAG_VALUE_MAX:
            values[-1] += f" {digest}"
        else:
            values.append(digest)
    return {TAG_PARENTS if i == 0 else f"{TAG_PARENTS}.{i + 1}": v for i, v in enumerate(values)}


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


# EC2's boot mode for each of baker's: a hybrid disk starts under UEFI where the instance
# type has it (Secure Boot, NitroTPM), else under BIOS.
BOOT_MODES: dict[str, BootModeValuesType] = {
    "bios": "legacy-bios",
    "hybrid": "uefi-preferred",
    "uefi": "uefi",
}


@dataclass(frozen=True)
class Artifact:
    """What publish reads from an artifact directory."""

    directory: Path
    image: Path
    name: str
    digest: str  # sha256:<hex> of image.qcow2
    raw_digest: str | None  # sha256:<hex> of the raw disk, when the build recorded it
    boot: str  # bios, hybrid or uefi
    parents: tuple[str, ...] = ()  # image digests of its parent and the parent's ancestors

    @classmethod
    def load(cls, directory: Path) -> Artifact:
        image, path = directory / artifact.IMAGE, directory / artifact.BUILD
        if not image.is_file():
            raise InputError(f"{directory}: no {artifact.IMAGE} here: not an artifact directory.")
        record = artifact.read_record(directory)
        info = record.image
        if info.digest is None:
            raise InputError(f"{path}: not a baker build record (image.digest: missing).")
        if info.boot not in BOOT_MODES:
            raise InputError(f"{path}: image.boot is {info.boot!r}, expected bios, hybrid or uefi.")
        parent = record.parent
        parents = (parent.digest, *(a.digest for a in parent.ancestors)) if parent else ()
        return cls(
            directory, image, record.recipe.name, info.digest, info.raw_digest, info.boot, parents
        )

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
            **parent_tags(self.parents),
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

    ec2: EC2Client
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


def _find(
    ec2: EC2Client, region: str, art: Artifact, timeout_s: float, log: Log
) -> RegionImage | None:
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
        wait(ec2.get_waiter("image_available"), timeout_s, what, ImageIds=[image_id])
    log(f"{art.digest} is already published in {region} as {image_id}: reusing it")
    snapshots = tuple(sorted(image_snapshots(ec2, image_id)))
    return RegionImage(region, image_id, snapshots, reused=True, raw_digest=raw)


def _upload_and_register(
    aws: Aws, region: str, art: Artifact, timeouts: Timeouts, log: Log, work_root: Path | None
) -> tuple[RegionImage, str]:
    ec2 = aws.ec2(region)
    undo = _Undo(ec2)
    try:
        with raw_copy(art.image, work_root) as raw:
            raw_digest = _check_raw(raw, art, log)
            snapshot = upload_snapshot(
                aws.ebs(region),
                raw,
                raw_digest,
                f"baker {art.name} {art.digest}",
                {TAG_RECIPE: art.name, TAG_DIGEST: art.digest, "Name": art.ami_name},
                undo.snapshots.append,
                log,
            )
        _tag(ec2, [snapshot], art.tags(raw_digest))
        wait(
            ec2.get_waiter("snapshot_completed"),
            timeouts.snapshot_s,
            f"wait for snapshot {snapshot} to complete",
            SnapshotIds=[snapshot],
        )
        image_id = _register(ec2, snapshot, art, raw_digest, undo)
        wait(
            ec2.get_waiter("image_available"),
            timeouts.image_s,
            f"wait for image {image_id} to become available",
            ImageIds=[image_id],
        )
    except BaseException:
        _report(undo.run(), log)
        raise
    log(f"published {art.digest} in {region} as {image_id} (snapshot {snapshot})")
    return RegionImage(region, image_id, (snapshot,), False, raw_digest), raw_digest


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


def _register(ec2: EC2Client, snapshot: str, art: Artifact, raw_digest: str, undo: _Undo) -> str:
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
                BootMode=BOOT_MODES[art.boot],
                TagSpecifications=[tag_spec("image", values)],
            )["ImageId"]
        )
    undo.images.append(image_id)
    _tag(ec2, [image_id], values)
    return image_id


def _tag(ec2: EC2Client, resources: list[str], values: dict[str, str]) -> None:
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
            ec2.get_waiter("image_available"),
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

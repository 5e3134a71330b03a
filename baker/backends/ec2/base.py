"""The AMIs of an EC2 build: the base it starts from (resolved from an id or a filter, and
pinned in build.json) and the image it makes (what ami.json holds). Also the log callback
type the package's modules share."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from baker.ami.ebs import SnapshotDigest
from baker.edge.aws import Aws, AwsError, api
from baker.errors import InputError
from baker.recipe.spec import Ec2Backend

if TYPE_CHECKING:
    from mypy_boto3_ec2.type_defs import ImageTypeDef

Log = Callable[[str], None]


def quiet(_message: str) -> None:
    """The log of a caller that wants none."""


@dataclass(frozen=True)
class BaseAmi:
    """The AMI a build starts from, as resolved: recorded in build.json as a pin."""

    region: str
    image_id: str
    name: str
    owner_id: str
    creation_date: str
    filter: dict[str, str] | None = None
    root_device: str = "/dev/xvda"  # where its root volume is attached

    def pin(self) -> dict[str, Any]:
        return {
            "region": self.region,
            "image_id": self.image_id,
            "name": self.name,
            "owner_id": self.owner_id,
            "creation_date": self.creation_date,
            "filter": self.filter,
        }


@dataclass(frozen=True)
class Ami:
    """The image a build made: what ami.json holds."""

    region: str
    image_id: str
    name: str
    snapshot_ids: tuple[str, ...]
    base: BaseAmi
    tags: dict[str, str]
    digest: SnapshotDigest

    def as_json(self) -> dict[str, Any]:
        return {
            "region": self.region,
            "image_id": self.image_id,
            "name": self.name,
            "snapshot_ids": list(self.snapshot_ids),
            "base_ami": self.base.pin(),
            "tags": self.tags,
            **self.digest.as_json(),
        }


def resolve_base(aws: Aws, config: Ec2Backend) -> BaseAmi:
    """The base AMI: the id given, checked, or the newest available match of the filter."""
    ec2 = aws.ec2()
    if config.ami:
        try:
            with api(f"look up backend.ami {config.ami}"):
                images = ec2.describe_images(ImageIds=[config.ami])["Images"]
        except AwsError as e:
            if not e.code.startswith("InvalidAMIID"):
                raise
            images = []
        if not images:
            raise InputError(f"backend.ami {config.ami}: no such image in {config.region}.")
        return _base(config.region, images[0], None)
    assert config.ami_filter is not None  # the spec requires one of the two
    flt = config.ami_filter
    with api(f"find the newest AMI owned by {flt.owner} named {flt.name}"):
        pages = ec2.get_paginator("describe_images").paginate(
            Owners=[flt.owner],
            Filters=[
                {"Name": "name", "Values": [flt.name]},
                {"Name": "state", "Values": ["available"]},
                {"Name": "architecture", "Values": ["x86_64"]},
            ],
        )
        images = [image for page in pages for image in page["Images"]]
    if not images:
        raise InputError(
            f"backend.ami_filter: no available x86_64 AMI owned by {flt.owner} is named "
            f"{flt.name} in {config.region}."
        )
    newest = max(images, key=lambda image: (image.get("CreationDate", ""), image["ImageId"]))
    return _base(config.region, newest, {"owner": flt.owner, "name": flt.name})


def _base(region: str, image: ImageTypeDef, flt: dict[str, str] | None) -> BaseAmi:
    if image.get("State", "available") != "available":
        raise InputError(f"base AMI {image['ImageId']} is {image['State']}, not available.")
    return BaseAmi(
        region=region,
        image_id=image["ImageId"],
        name=image.get("Name", ""),
        owner_id=image.get("OwnerId", ""),
        creation_date=image.get("CreationDate", ""),
        filter=flt,
        root_device=image.get("RootDeviceName", "/dev/xvda"),
    )

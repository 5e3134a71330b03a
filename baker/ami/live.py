"""`baker verify --live`: an EC2 artifact's image checked against the cloud itself: the AMI
still there, still on the snapshot ami.json names, and that snapshot's raw volume read back
through the EBS direct API to the digest the build signed."""

from __future__ import annotations

from typing import Any

from baker.ami.ebs import snapshot_digest
from baker.edge.aws import Aws, api, root_snapshot
from baker.errors import BuildError


def check(ami: dict[str, Any]) -> str:
    """A detail line when the image holds what ami.json says; else BuildError naming what
    differs. Credentials and endpoints come the way every AWS tool takes them."""
    region, image_id = str(ami["region"]), str(ami["image_id"])
    aws = Aws(region)
    with api(f"look up image {image_id} in {region}"):
        found = aws.ec2().describe_images(Filters=[{"Name": "image-id", "Values": [image_id]}])
    if not found["Images"]:
        raise BuildError(f"image {image_id} is not in {region} (any more).")
    root = root_snapshot(found["Images"], image_id)
    if root != ami.get("root_snapshot_id"):
        raise BuildError(
            f"{image_id} now boots from snapshot {root}, not {ami.get('root_snapshot_id')}."
        )
    read = snapshot_digest(aws.ebs(), root, lambda _line: None)
    if read.raw_digest != ami["raw_digest"]:
        raise BuildError(
            f"snapshot {root} of {image_id} now hashes to {read.raw_digest}, not the "
            f"{ami['raw_digest']} the build recorded."
        )
    return f"{image_id}: snapshot {root} read back, {read.blocks} blocks: {read.raw_digest}"

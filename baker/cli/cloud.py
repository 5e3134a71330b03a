"""Commands for the cloud: publish an image to EC2."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from baker.cli.shared import ArtifactArg, JsonOpt, command, reporter
from baker.errors import InputError

if TYPE_CHECKING:
    from baker.ami.publish import Published

_REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-[0-9]+")


@command()
def publish(
    artifact: ArtifactArg,
    to: Annotated[
        str, typer.Option("--to", help="Where to publish: ec2.", metavar="CLOUD")
    ] = "ec2",
    region: Annotated[
        str | None,
        typer.Option(help="The AWS region of the AMI ($AWS_REGION or the profile's by default)."),
    ] = None,
    copy_to: Annotated[
        str,
        typer.Option(
            "--copy-to", help="More regions to copy the AMI to: R2,R3.", metavar="REGIONS"
        ),
    ] = "",
    profile: Annotated[
        str | None, typer.Option(help="An AWS profile ($AWS_PROFILE by default).", metavar="NAME")
    ] = None,
    timeout: Annotated[
        float,
        typer.Option(help="Seconds each wait (snapshot, image, copy) may take.", metavar="SECONDS"),
    ] = 3600,
    as_json: JsonOpt = False,
) -> None:
    """Upload an artifact's image to EC2 as an AMI. It goes through the EBS direct API (no
    S3), tagged with its digest; an AMI of that digest already there is reused. Prints
    REGION AMI-ID."""
    if to != "ec2":
        raise InputError(f"--to {to}: the only publish target is ec2.")
    targets = _regions(copy_to)
    if region is not None:
        _check_region("--region", region)
    if timeout <= 0:
        raise InputError(f"--timeout {timeout:g}: expected a number of seconds above 0.")
    result = _run(artifact, region, targets, profile, timeout)
    if as_json:
        typer.echo(json.dumps(result.as_dict(), indent=2, sort_keys=True))
        return
    for image in result.images:
        typer.echo(f"{image.region} {image.image_id}{' (reused)' if image.reused else ''}")


def _run(
    artifact: Path,
    region: str | None,
    targets: tuple[str, ...],
    profile: str | None,
    timeout: float,
) -> Published:
    # Imported here: the other commands need neither boto3 nor the EBS upload.
    from baker.ami.publish import Timeouts
    from baker.ami.publish import publish as publish_image
    from baker.edge.aws import Aws, default_region

    progress = reporter()
    aws = Aws(region or default_region(profile), profile)
    _check_region("--region", aws.region)
    with progress.step("publish", f"{artifact} to EC2 {aws.region}"):
        return publish_image(
            artifact,
            aws.region,
            targets,
            aws=aws,
            timeouts=Timeouts.all(timeout),
            log=progress.info,
        )


def _regions(text: str) -> tuple[str, ...]:
    regions = tuple(r.strip() for r in text.split(",") if r.strip())
    for r in regions:
        _check_region("--copy-to", r)
    return regions


def _check_region(option: str, region: str) -> None:
    if not _REGION.fullmatch(region):
        raise InputError(f"{option} {region!r}: expected an AWS region like eu-west-1.")

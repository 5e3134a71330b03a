"""Commands for the cloud: publish an image to EC2 (issue: cloud backend). Registered on the
main CLI by baker.cli."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from baker.errors import BakerError, InputError

if TYPE_CHECKING:
    from rich.console import Console

    from baker.ami.publish import Published

_REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-[0-9]+")


def register(app: typer.Typer) -> None:
    """Add this module's commands to `app`."""
    app.command("publish")(publish)


def publish(
    artifact: Annotated[Path, typer.Argument(help="An artifact directory (out/NAME).")],
    to: Annotated[str, typer.Option("--to", help="Where to publish: ec2.")] = "ec2",
    region: Annotated[
        str | None,
        typer.Option(help="The AWS region of the AMI ($AWS_REGION or the profile's by default)."),
    ] = None,
    copy_to: Annotated[
        str, typer.Option("--copy-to", help="More regions to copy the AMI to: R2,R3.")
    ] = "",
    profile: Annotated[
        str | None, typer.Option(help="An AWS profile ($AWS_PROFILE by default).")
    ] = None,
    timeout: Annotated[
        float, typer.Option(help="Seconds each wait (snapshot, image, copy) may take.")
    ] = 3600,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Upload ARTIFACT's image to EC2 as an AMI through the EBS direct API (no S3), tagged with
    its digest; reuses the AMI if that digest is already published. Prints REGION AMI-ID."""
    # Imported here: the main CLI's other commands need neither boto3 nor the progress display.
    from baker.cli import Interrupted, _fail, err

    try:
        if to != "ec2":
            raise InputError(f"--to {to}: the only publish target is ec2.")
        targets = _regions(copy_to)
        if region is not None:
            _check_region("--region", region)
        if timeout <= 0:
            raise InputError(f"--timeout {timeout:g}: expected a number of seconds above 0.")
        result = _run(artifact, region, targets, profile, timeout, err)
    except BakerError as e:
        _fail(e)
    except KeyboardInterrupt:
        _fail(Interrupted("interrupted; cleaned up."))
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
    console: Console,
) -> Published:
    from baker.ami.publish import Timeouts
    from baker.ami.publish import publish as publish_image
    from baker.edge.aws import Aws, default_region
    from baker.progress import Reporter

    reporter = Reporter(console)
    aws = Aws(region or default_region(profile), profile)
    _check_region("--region", aws.region)
    with reporter.step("publish", f"{artifact} to EC2 {aws.region}"):
        return publish_image(
            artifact,
            aws.region,
            targets,
            aws=aws,
            timeouts=Timeouts.all(timeout),
            log=reporter.info,
        )


def _regions(text: str) -> tuple[str, ...]:
    regions = tuple(r.strip() for r in text.split(",") if r.strip())
    for r in regions:
        _check_region("--copy-to", r)
    return regions


def _check_region(option: str, region: str) -> None:
    if not _REGION.fullmatch(region):
        raise InputError(f"{option} {region!r}: expected an AWS region like eu-west-1.")

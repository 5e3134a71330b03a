"""The EC2 half of an image's life after its publish: `baker prune --ec2 REGION` deregisters
the AMIs the retention rules (baker.lifecycle.retention) let go, and deletes their snapshots;
`baker revoke` deprecates the AMIs of a revoked image and tags them with the reason.

An AMI is baker's when this account owns it and it carries the baker:image-digest tag that
publish gives it; nothing else is looked at, let alone removed. Its name for the newest-N rule
is its baker:recipe tag, its build time its CreationDate (publish reuses an AMI rather than
registering the same digest again, so that is when the image reached EC2), its ancestors the
baker:parent-digests tags. For --keep-tag, an AMI has as tags each EC2 tag as "Key=Value" and
its AMI name alone: `Name=prod-*` or `channel=release` match a tag, `*release*` the AMI name
(or any tag's "Key=Value" that contains it).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from baker.ami.publish import TAG_DIGEST, TAG_PARENTS, TAG_RECIPE
from baker.edge.aws import Aws, api, default_region, remove_image, snapshots_of, tags
from baker.errors import BuildError
from baker.lifecycle import retention

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_ec2.type_defs import FilterTypeDef, ImageTypeDef

__all__ = ["TAG_REVOKED", "TAG_REVOKED_AT", "client", "deprecate", "prune"]

TAG_REVOKED = "baker:revoked"  # the revocation's reason
TAG_REVOKED_AT = "baker:revoked-at"  # when `baker revoke` ran, UTC
_TAG_VALUE_MAX = 256  # EC2's limit on a tag value, in characters

Log = Callable[[str], None]


def client(region: str | None = None, profile: str | None = None) -> EC2Client:
    """An EC2 client for `region` (else the region AWS tools would use), made as publish
    makes its own: the standard credential chain and endpoint variables."""
    return Aws(region or default_region(profile), profile).ec2()


def prune(
    ec2: EC2Client, policy: retention.Policy, now: datetime, yes: bool, log: Log
) -> list[retention.Decision]:
    """Decide on each of this account's baker AMIs in the client's region; when `yes`,
    deregister each one not kept and delete its snapshots. A removal that fails is logged
    and the others go on; BuildError at the end names what was left."""
    found = {i["ImageId"]: i for i in _images(ec2, None, "list the baker AMIs")}
    decisions = retention.decide([_candidate(i, now) for i in found.values()], policy, now)
    if not yes:
        return decisions
    left: list[str] = []
    for decision in decisions:
        if decision.keep:
            continue
        c = decision.candidate
        # The snapshots as listed, and again as remove_image describes the image: one that a
        # second look misses (the endpoint failing) is still deleted.
        snapshots = sorted(snapshots_of([found[c.key]]))
        failed = remove_image(ec2, c.key, snapshots)
        for item in failed:
            log(f"NOT removed: {item}")
        left += failed
        if not failed:
            what = ", ".join(snapshots) or "no snapshot"
            log(f"deregistered {c.key} ({c.name} {c.image[:19]}; {decision.why}), deleted {what}")
    if left:
        raise BuildError(
            f"prune --ec2 could not remove {len(left)} AMI(s) or snapshot(s): "
            f"{'; '.join(left)}; run it again, or remove them by hand."
        )
    return decisions


def deprecate(ec2: EC2Client, image_digest: str, reason: str, now: datetime, log: Log) -> list[str]:
    """Deprecate every AMI of this account tagged with `image_digest` in the client's region,
    from a minute or so on (deprecation_time), and tag it baker:revoked (the reason) and
    baker:revoked-at. Returns their ids: none when the image was not published here."""
    found = _images(ec2, image_digest, f"look for the AMIs of {image_digest}")
    at = deprecation_time(now)
    values = {
        TAG_REVOKED: _tag_value(" ".join(reason.split())),
        TAG_REVOKED_AT: now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    failed: list[str] = []
    for image in found:
        image_id = image["ImageId"]
        try:
            # Tagged first: the reason is worth having even where deprecating is refused.
            with api(f"tag {image_id} as revoked"):
                ec2.create_tags(Resources=[image_id], Tags=tags(values))
            since = _time(image.get("DeprecationTime"))
            if since is not None and since <= at:
                # A later time would undo the deprecation until then.
                log(f"{image_id} is deprecated already (since {since:%Y-%m-%d %H:%M}Z); tagged")
                continue
            with api(f"deprecate {image_id}"):
                ec2.enable_image_deprecation(ImageId=image_id, DeprecateAt=at)
        except BuildError as e:  # credentials refused (InputError) would fail every one: raised
            log(f"NOT revoked: {image_id} ({e})")
            failed.append(f"{image_id} ({e})")
            continue
        log(f"deprecated {image_id} from {at:%Y-%m-%d %H:%M}Z, tagged {TAG_REVOKED}")
    if failed:
        raise BuildError(
            f"{len(failed)} AMI(s) of {image_digest} could not be deprecated: {'; '.join(failed)}."
        )
    return [i["ImageId"] for i in found]


def deprecation_time(now: datetime) -> datetime:
    """The first whole minute at least 30 s after `now`, UTC. EC2 rounds DeprecateAt to the
    nearest minute and refuses a time in the past: rounded down, or the next minute 10 ms away
    reaching AWS late (or by a clock a little ahead of ours), it would be."""
    soon = now.astimezone(UTC) + timedelta(seconds=30)
    return soon.replace(second=0, microsecond=0) + timedelta(minutes=1)


def _images(ec2: EC2Client, digest: str | None, what: str) -> list[ImageTypeDef]:
    """This account's AMIs tagged with `digest` (any image digest when None), by id, deprecated
    and disabled ones included (an owner sees its deprecated AMIs anyway; disabled ones only
    when asked)."""
    flt: FilterTypeDef = (
        {"Name": f"tag:{TAG_DIGEST}", "Values": [digest]}
        if digest
        else {"Name": "tag-key", "Values": [TAG_DIGEST]}
    )
    found: list[ImageTypeDef] = []
    with api(what):
        for page in ec2.get_paginator("describe_images").paginate(
            Owners=["self"], Filters=[flt], IncludeDeprecated=True, IncludeDisabled=True
        ):
            found += page["Images"]
    # Checked again: an EC2-compatible endpoint that ignored the filter must not have baker
    # deregister or deprecate what it did not publish.
    return sorted((i for i in found if _tagged(i, digest)), key=lambda i: i["ImageId"])


def _tagged(image: ImageTypeDef, digest: str | None) -> bool:
    value = next((t["Value"] for t in image.get("Tags", []) if t["Key"] == TAG_DIGEST), None)
    return value is not None and digest in (None, value)


def _candidate(image: ImageTypeDef, now: datetime) -> retention.Candidate:
    values = {t["Key"]: t["Value"] for t in image.get("Tags", [])}
    name = image.get("Name", "")
    return retention.Candidate(
        key=image["ImageId"],
        # Without its recipe's tag, an AMI is counted alone: the newest-N rule keeps it.
        name=values.get(TAG_RECIPE) or name or image["ImageId"],
        image=values[TAG_DIGEST],
        # An AMI that does not say when it was made counts as just made: kept by age.
        built=_time(image.get("CreationDate")) or now,
        tags=(*sorted(f"{k}={v}" for k, v in values.items()), *([name] if name else [])),
        ancestors=parents(values),
    )


def parents(values: dict[str, str]) -> tuple[str, ...]:
    """The image digests the baker:parent-digests tags name (publish.parent_tags), in order."""
    found: list[str] = []
    n = 1
    while (value := values.get(TAG_PARENTS if n == 1 else f"{TAG_PARENTS}.{n}")) is not None:
        found += value.split()
        n += 1
    return tuple(found)


def _time(text: str | None) -> datetime | None:
    """An EC2 time ("2025-03-01T11:00:00.000Z"), or None when missing or unreadable."""
    if not text:
        return None
    try:
        return datetime.fromisoformat(text).astimezone(UTC)
    except ValueError:
        return None


def _tag_value(text: str) -> str:
    return text if len(text) <= _TAG_VALUE_MAX else text[: _TAG_VALUE_MAX - 1] + "…"

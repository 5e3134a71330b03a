"""The edge to AWS: boto3 sessions and clients, waits with deadlines, and AWS errors turned into
one-sentence BakerErrors. Nothing else in baker imports boto3.

Credentials and endpoints come the way every AWS tool takes them: the standard credential
chain (environment, `AWS_PROFILE` or a named profile, shared files, SSO, instance roles) and
`AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_EC2` / `AWS_ENDPOINT_URL_EBS` for EC2-compatible
endpoints. baker never reads, prints or stores a credential itself. (Other modules name the
clients' types from the boto3 stubs, for mypy only.)
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, ParamSpec, TypeVar, overload

import boto3
import botocore.exceptions
import botocore.session
from botocore.config import Config

from baker import __version__
from baker.errors import BakerError, BuildError, InputError

if TYPE_CHECKING:  # the stubs are test dependencies: types only, never imported at run time
    from botocore.waiter import Waiter
    from mypy_boto3_ebs import EBSClient
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_ec2.literals import ResourceTypeType
    from mypy_boto3_ec2.type_defs import ImageTypeDef, TagSpecificationTypeDef, TagTypeDef

P = ParamSpec("P")
T = TypeVar("T")
Service = Literal["ec2", "ebs"]

# botocore logs request headers (the Authorization header names the access key) at DEBUG;
# whatever logging a caller sets up, none of that may reach a build log.
for _name in ("boto3", "botocore", "urllib3"):
    logging.getLogger(_name).setLevel(logging.WARNING)

POLL_S = 5.0  # between two looks at a resource's state; AWS's own waiters use 15 s

# Standard retries (throttling, 5xx) with AWS's own number of attempts unless the user's
# AWS_MAX_ATTEMPTS or config file says otherwise.
_CONFIG = Config(
    retries={"mode": "standard"},
    connect_timeout=10,
    read_timeout=60,
    user_agent_extra=f"baker/{__version__}",
)


class Timeout(BuildError):
    """A resource did not reach the state waited for within its deadline."""


@dataclass
class Aws:
    """One account's API clients for one build or publish, in any region it touches."""

    region: str
    profile: str | None = None
    _session: boto3.Session | None = field(default=None, init=False, repr=False)
    _clients: dict[tuple[Service, str], EC2Client | EBSClient] = field(
        default_factory=dict, init=False, repr=False
    )

    @property
    def session(self) -> boto3.Session:
        if self._session is None:
            with api("read the AWS configuration"):
                self._session = boto3.Session(profile_name=self.profile, region_name=self.region)
        return self._session

    @overload
    def client(self, service: Literal["ec2"], region: str | None = None) -> EC2Client: ...
    @overload
    def client(self, service: Literal["ebs"], region: str | None = None) -> EBSClient: ...
    def client(self, service: Service, region: str | None = None) -> EC2Client | EBSClient:
        region = region or self.region
        key = (service, region)
        if key not in self._clients:
            with api(f"set up the {service} client"):
                try:
                    self._clients[key] = self.session.client(
                        service, region_name=region, config=_CONFIG
                    )
                except ValueError as e:  # botocore's word for a malformed endpoint URL
                    raise InputError(f"could not set up the {service} client: {e}.") from None
        return self._clients[key]

    def ec2(self, region: str | None = None) -> EC2Client:
        return self.client("ec2", region)

    def ebs(self, region: str | None = None) -> EBSClient:
        return self.client("ebs", region)

    def endpoint(self, service: Service = "ec2", region: str | None = None) -> str:
        return str(self.client(service, region).meta.endpoint_url)


def has_credentials() -> bool:
    """Whether the credential chain finds credentials without asking the network: the
    environment, a profile, the shared files (an instance or container role is asked over
    HTTP, and a host that is not on AWS must not send that; such a worker names its queues)."""
    session = botocore.session.get_session()
    resolver = session.get_component("credential_provider")
    for remote in ("container-role", "iam-role"):
        with contextlib.suppress(ValueError):
            resolver.remove(remote)
    try:
        return resolver.load_credentials() is not None
    except botocore.exceptions.BotoCoreError:
        return False


def default_region(profile: str | None = None) -> str:
    """The region AWS tools would use: $AWS_REGION, $AWS_DEFAULT_REGION or the profile's."""
    region = os.environ.get("AWS_REGION")
    if not region:
        with api("read the AWS configuration"):
            region = boto3.Session(profile_name=profile).region_name
    if not region:
        raise InputError("no AWS region: give --region, or set AWS_REGION or a profile's region.")
    return str(region)


class AwsError(BuildError):
    """An AWS API call failed; `code` is AWS's error code (DependencyViolation, ...)."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code


# Errors that say who is calling, or what they may do, is wrong: fixed by the user (exit 2).
_CREDENTIAL_CODES = {
    "AuthFailure",
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "ExpiredTokenException",
    "InvalidAccessKeyId",
    "UnauthorizedOperation",
    "AccessDenied",
    "AccessDeniedException",
}


@contextlib.contextmanager
def api(what: str) -> Iterator[None]:
    """Turn what boto3 raises while doing `what` into one sentence naming it. Missing or
    refused credentials are the user's to fix (exit 2); the rest is a failed step (exit 1)."""
    try:
        yield
    except BakerError:
        raise
    except botocore.exceptions.NoCredentialsError:
        raise InputError(
            f"could not {what}: no AWS credentials found (set AWS_PROFILE, or "
            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or run where an instance role applies)."
        ) from None
    except botocore.exceptions.ProfileNotFound as e:
        raise InputError(f"could not {what}: {e}.") from None
    except botocore.exceptions.NoRegionError:
        raise InputError(f"could not {what}: no AWS region given.") from None
    except botocore.exceptions.ClientError as e:
        err = e.response.get("Error", {})
        code = str(err.get("Code") or "error")
        message = redact(str(err.get("Message") or "").rstrip("."))
        text = f"could not {what}: {e.operation_name} failed with {code}"
        text += f": {message}." if message else "."
        if code in _CREDENTIAL_CODES:
            raise InputError(text) from None
        raise AwsError(text, code) from None
    except (botocore.exceptions.ConnectionError, botocore.exceptions.HTTPClientError) as e:
        url = e.kwargs.get("endpoint_url") or "its endpoint"
        raise AwsError(
            f"could not {what}: cannot reach the AWS API at {url} ({type(e).__name__})."
        ) from None
    except (botocore.exceptions.BotoCoreError, OSError) as e:
        reason = redact(str(e)).rstrip(".") or type(e).__name__
        raise AwsError(f"could not {what}: {reason}.") from None


def wait(waiter: Waiter, timeout_s: float, what: str, **params: object) -> None:
    """Wait with one of boto3's waiters (`client.get_waiter(name)`), within `timeout_s`
    overall; 0 means not at all, so the wait fails at once. A resource that reaches a failure
    state on the way (an instance terminated while it was waited on to run) fails the wait at
    once too."""
    if timeout_s <= 0:
        raise Timeout(f"{what}: not done, and its timeout is 0 s.")
    delay = min(POLL_S, timeout_s)
    attempts = max(1, math.ceil(timeout_s / delay))
    with api(what):
        try:
            # Through botocore's Waiter, whose wait() takes any waiter's parameters. The
            # service stubs type Delay as an int; botocore sleeps for any number of seconds,
            # and a timeout under POLL_S polls that much more often.
            waiter.wait(**params, WaiterConfig={"Delay": delay, "MaxAttempts": attempts})
        except botocore.exceptions.WaiterError as e:
            if "Max attempts exceeded" in str(e):
                raise Timeout(f"{what}: not done within {timeout_s:g} s.") from None
            raise AwsError(f"{what}: {_waiter_reason(e)}.", _waiter_code(e)) from None


def _waiter_reason(e: botocore.exceptions.WaiterError) -> str:
    err = (e.last_response or {}).get("Error")
    if err:
        return redact(f"{err.get('Code')}: {err.get('Message')}".rstrip("."))
    # WaiterError keeps its reason in kwargs only: it has no `reason` attribute.
    return str(e.kwargs.get("reason") or e).rstrip(".")


def _waiter_code(e: botocore.exceptions.WaiterError) -> str:
    return str(((e.last_response or {}).get("Error") or {}).get("Code") or "")


def retry(
    what: str,
    codes: set[str],
    timeout_s: float,
    call: Callable[P, T],
    *args: P.args,
    **params: P.kwargs,
) -> T:
    """`call(*args, **params)`, again while it fails with one of `codes` (AWS is eventually
    consistent: a security group stays in use for a while after its instance is gone)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with api(what):
                return call(*args, **params)
        except AwsError as e:
            if e.code not in codes or time.monotonic() >= deadline:
                raise
        time.sleep(min(POLL_S, max(0.0, deadline - time.monotonic())))


def describe_image(ec2: EC2Client, image_id: str) -> list[ImageTypeDef]:
    """DescribeImages of one image id: the image, or none."""
    with api(f"describe image {image_id}"):
        return list(ec2.describe_images(ImageIds=[image_id])["Images"])


def image_snapshots(ec2: EC2Client, image_id: str) -> set[str]:
    """The snapshots an image's block device mappings name."""
    return snapshots_of(describe_image(ec2, image_id))


def snapshots_of(images: Sequence[ImageTypeDef]) -> set[str]:
    """The snapshots the block device mappings of described images name."""
    return {
        m["Ebs"]["SnapshotId"]
        for image in images
        for m in image.get("BlockDeviceMappings", [])
        if m.get("Ebs", {}).get("SnapshotId")
    }


def root_snapshot(images: Sequence[ImageTypeDef], image_id: str) -> str:
    """The snapshot behind the root device of `image_id`, among described `images`."""
    for image in (i for i in images if i.get("ImageId") == image_id):
        for m in image.get("BlockDeviceMappings", []):
            if m.get("DeviceName") == image.get("RootDeviceName") and "Ebs" in m:
                return str(m["Ebs"]["SnapshotId"])
    raise BuildError(f"image {image_id} has no EBS snapshot behind its root device.")


def remove_image(ec2: EC2Client, image_id: str, snapshots: Iterable[str] = ()) -> list[str]:
    """Deregister an image and delete its snapshots (those it names, and `snapshots`).
    Returns what could not be removed, each with its id and the reason; never raises."""
    left: list[str] = []
    found = set(snapshots)
    try:
        found |= image_snapshots(ec2, image_id)
    except BakerError as e:
        if not gone(e):
            left.append(f"snapshots of image {image_id} ({e})")
    try:
        with api(f"deregister image {image_id}"):
            ec2.deregister_image(ImageId=image_id)
    except BakerError as e:
        if not gone(e):
            left.append(f"image {image_id} ({e})")
    for snapshot in sorted(found):
        left.extend(delete_snapshot(ec2, snapshot))
    return left


def delete_snapshot(ec2: EC2Client, snapshot_id: str) -> list[str]:
    try:
        with api(f"delete snapshot {snapshot_id}"):
            ec2.delete_snapshot(SnapshotId=snapshot_id)
    except BakerError as e:
        if not gone(e):
            return [f"snapshot {snapshot_id} ({e})"]
    return []


def gone(e: BaseException) -> bool:
    """Whether the error says the thing to remove is not there (any more): nothing to do."""
    return isinstance(e, AwsError) and e.code.endswith(".NotFound")


def tags(values: dict[str, str]) -> list[TagTypeDef]:
    """EC2's tags (and EBS's, of the same shape) for `values`, in key order."""
    return [{"Key": k, "Value": v} for k, v in sorted(values.items())]


def tag_spec(resource_type: ResourceTypeType, values: dict[str, str]) -> TagSpecificationTypeDef:
    return {"ResourceType": resource_type, "Tags": tags(values)}


def redact(text: str) -> str:
    """`text` without any credential given in the environment, should an error message
    quote one (AWS's do not; an EC2-compatible endpoint's might)."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        value = os.environ.get(name)
        if value and len(value) >= 8:
            text = text.replace(value, "[redacted]")
    return text

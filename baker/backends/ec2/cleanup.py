"""Removing what an EC2 build made: its instance, key pair and security group, and an image
it did not finish, with that image's snapshots. Each is found both by the id remembered the
moment it existed and by the build's name and tags (a call that failed on the way back may
still have made something). What cannot be removed is reported with its id."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from baker.backends.base import BuildLabel
from baker.backends.ec2.base import Log
from baker.edge.aws import api, gone, remove_image, retry, wait
from baker.errors import BakerError

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_ec2.literals import InstanceStateNameType

# Instance states that still hold on to the security group and cost money.
NOT_GONE: list[InstanceStateNameType] = ["pending", "running", "stopping", "stopped"]


@dataclass
class Resources:
    """What one build made on AWS so far, each remembered the moment it exists."""

    key_name: str | None = None
    group_id: str | None = None
    instance_id: str | None = None
    image_id: str | None = None
    image_done: bool = False  # the image is the build's result: it stays


class Teardown:
    """One removal of everything `made` for the build `label`; `run()` never raises."""

    def __init__(
        self, ec2: EC2Client, label: BuildLabel, made: Resources, stop_timeout_s: float, log: Log
    ) -> None:
        self.ec2 = ec2
        self.label = label
        self.made = made
        self.stop_timeout_s = stop_timeout_s
        self.log = log
        self.leftovers: list[str] = []

    def run(self) -> list[str]:
        """Terminate the instance, delete the key pair and the security group, and
        deregister a half-made image with its snapshots. Returns (and logs) what could not
        be removed, with ids."""
        try:
            terminated = self._terminate()
            self._delete_key_pair()
            # A group stays in use for a while after its instance is gone.
            self._delete_security_group(retry_s=120 if terminated else 0)
            if not self.made.image_done:
                self._remove_half_made_images()
        except Exception as e:
            # Not an AWS error (those are handled on the way): a reply of an unexpected
            # shape. Whatever was not reached yet is reported, not raised.
            self._leftover(f"what remains of build {self.label.build_id}", e)
        for item in self.leftovers:
            self.log(f"NOT cleaned up: {item}; remove it by hand")
        return self.leftovers

    def _leftover(self, what: str, error: BaseException) -> None:
        self.leftovers.append(f"{what} ({error})")

    def _found(self, what: str, call: Callable[[], list[str]]) -> list[str]:
        try:
            with api(f"look for the build's {what}"):
                return call()
        except BakerError as e:
            self._leftover(f"any {what} of build {self.label.build_id}", e)
            return []

    def _terminate(self) -> bool:
        known = [self.made.instance_id] if self.made.instance_id else []
        ids = sorted(set(known) | set(self._found("instances", self._tagged_instances)))
        if not ids:
            return True
        try:
            with api(f"terminate {', '.join(ids)}"):
                self.ec2.terminate_instances(InstanceIds=ids)
            wait(
                self.ec2.get_waiter("instance_terminated"),
                max(self.stop_timeout_s, 60),
                f"wait for {', '.join(ids)} to terminate",
                InstanceIds=ids,
            )
        except BakerError as e:
            if gone(e):
                return True
            for instance in ids:
                self._leftover(f"instance {instance}", e)
            return False
        self.log(f"terminated {', '.join(ids)}")
        return True

    def _tagged_instances(self) -> list[str]:
        reply = self.ec2.describe_instances(
            Filters=[
                {"Name": "tag:baker:build", "Values": [self.label.build_id]},
                {"Name": "instance-state-name", "Values": NOT_GONE},
            ]
        )
        return [i["InstanceId"] for r in reply["Reservations"] for i in r["Instances"]]

    def _delete_key_pair(self) -> None:
        name = self.made.key_name
        if name is None:
            return
        try:
            with api(f"delete key pair {name}"):
                self.ec2.delete_key_pair(KeyName=name)
        except BakerError as e:
            self._leftover(f"key pair {name}", e)

    def _delete_security_group(self, retry_s: float) -> None:
        known = [self.made.group_id] if self.made.group_id else []
        ids = sorted(set(known) | set(self._found("security groups", self._named_groups)))
        for group in ids:
            try:
                retry(
                    f"delete security group {group}",
                    {"DependencyViolation"},
                    retry_s,
                    self.ec2.delete_security_group,
                    GroupId=group,
                )
            except BakerError as e:
                if not gone(e):
                    self._leftover(f"security group {group}", e)

    def _named_groups(self) -> list[str]:
        reply = self.ec2.describe_security_groups(
            Filters=[{"Name": "group-name", "Values": [self.label.name]}]
        )
        return [g["GroupId"] for g in reply["SecurityGroups"]]

    def _remove_half_made_images(self) -> None:
        known = [self.made.image_id] if self.made.image_id else []
        ids = sorted(set(known) | set(self._found("images", self._tagged_images)))
        for image in ids:
            snapshots = self._found("snapshots", functools.partial(self._pending_snapshots, image))
            left = remove_image(self.ec2, image, snapshots)
            self.leftovers.extend(left)
            if not any(item.startswith(f"image {image} ") for item in left):
                self.log(f"deregistered half-made image {image}")

    def _tagged_images(self) -> list[str]:
        reply = self.ec2.describe_images(
            Owners=["self"], Filters=[{"Name": "tag:baker:build", "Values": [self.label.build_id]}]
        )
        return [i["ImageId"] for i in reply["Images"]]

    def _pending_snapshots(self, image_id: str) -> list[str]:
        """A pending image's snapshots, which its mappings may not name yet: found by the
        description AWS gives them."""
        if not self.made.instance_id:
            return []
        reply = self.ec2.describe_snapshots(
            OwnerIds=["self"],
            Filters=[
                {
                    "Name": "description",
                    "Values": [f"Created by CreateImage({self.made.instance_id}) for {image_id}*"],
                }
            ],
        )
        return [s["SnapshotId"] for s in reply["Snapshots"]]

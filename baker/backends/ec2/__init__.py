"""The EC2 backend: a throwaway instance from a base AMI, reached over SSH like a libvirt
domain, and handed back as a new AMI (baker.backends.base's Backend interface).

Everything it creates (key pair, security group, instance, image) is named and tagged for the
build, remembered the moment it exists, and removed by `destroy()` on every path; whatever
cannot be removed is reported with its id.

Modules: base (the base AMI and the AMI made), boot (a new AMI's boot, timed), launch (the
AWS calls that make an instance), access (host-key trust, who may reach SSH, root access
for the build), machine (Ec2Machine), cleanup (removing what a build made).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from baker.backends.base import (
    BaseDisk,
    BootPlan,
    BuildLabel,
    CloudBase,
    CloudImage,
    DiskImage,
    HandsBack,
    MachineRecord,
    MeasuredBoot,
    StartsFrom,
)
from baker.backends.ec2 import boot as _boot
from baker.backends.ec2.base import Ami, BaseAmi, Log, quiet, resolve_base
from baker.backends.ec2.machine import Ec2Machine
from baker.edge.aws import Aws, AwsError, api, gone
from baker.edge.ssh import BuildKeys
from baker.recipe.spec import Ec2Backend

__all__ = ["Ami", "BaseAmi", "Ec2", "Ec2Machine", "resolve_base"]


class Ec2:
    """The EC2 backend: `start` launches a machine the pipeline logs in to as root, like a
    libvirt domain, and whose `hand_back` is a new AMI."""

    kind = "ec2"
    starts_from: StartsFrom = "cloud"
    hands_back: HandsBack = "cloud-image"

    def __init__(self, config: Ec2Backend, *, aws: Aws | None = None, log: Log = quiet) -> None:
        self.config = config
        self.aws = aws or Aws(config.region)
        self.log = log

    def key_config(self) -> dict[str, Any]:
        """The settings that can change the image: where it is made, and on what. Timeouts,
        addresses and the login user cannot."""
        return {
            "type": self.config.type,
            "region": self.config.region,
            "instance_type": self.config.instance_type,
            "root_volume_gib": self.config.root_volume_gib,
        }

    def resolve_base(self) -> BaseAmi:
        return resolve_base(self.aws, self.config)

    def start(
        self, base: BaseDisk | CloudBase, keys: BuildKeys, workdir: Path, label: BuildLabel
    ) -> Ec2Machine:
        """Key pair, security group, instance from `base` (a BaseAmi from resolve_base);
        wait for it, reach it over SSH as ssh_user, check its host key, and let the build's
        key in as root. On any failure (Ctrl-C included) everything made so far is removed
        before the error goes on. `workdir` is not used: nothing of the machine is local."""
        if not isinstance(base, BaseAmi):
            raise TypeError(f"the ec2 backend starts from a BaseAmi, not {base!r}")
        machine = Ec2Machine(self.aws, self.config, label, self.log)
        try:
            machine.launch(keys, base).close()
        except BaseException:
            machine.destroy()
            raise
        return machine

    def boot_plan(self, boot: str, runs: int) -> BootPlan:
        # An AMI boots the way its boot mode says: one path, launched `runs` times.
        return BootPlan(
            accel=self.kind,
            firmware=((self.kind, runs),),
            method=_boot.METHOD,
            key=self.key_config(),
            labels={"instance_type": self.config.instance_type},
        )

    def boot_image(
        self,
        image: DiskImage | CloudImage,
        firmware: str,
        workdir: Path,
        label: BuildLabel,
        detail: bool,
    ) -> MeasuredBoot:
        """One launch of `image`, timed to SSH (baker.backends.ec2.boot)."""
        if not isinstance(image, CloudImage):
            raise TypeError(f"the ec2 backend boots an AMI, not {image!r}")
        return _boot.boot_image(self.aws, self.config, image, label, self.log)

    def record_fields(self, machine: MachineRecord | None) -> dict[str, Any]:
        return {"ec2": machine.fields if machine else None}

    def image_exists(self, image: CloudImage) -> bool:
        """Whether `image` is still there, and available, in its region. An image AWS does
        not know (any more) is not; any other AWS error is raised."""
        try:
            with api(f"look up image {image.image_id} in {image.region}"):
                found = self.aws.ec2(image.region).describe_images(ImageIds=[image.image_id])
        except AwsError as e:
            if gone(e):
                return False
            raise
        return any(
            i.get("ImageId") == image.image_id and i.get("State") == "available"
            for i in found["Images"]
        )


if TYPE_CHECKING:
    from baker.backends.base import CloudBackend, Guest, Machine
    from baker.edge.guest import SshGuest

    def _conforms(
        backend: Ec2, machine: Ec2Machine, guest: SshGuest
    ) -> tuple[CloudBackend, Machine, Guest]:
        """Never called: mypy checks here that the classes implement the interface."""
        return backend, machine, guest

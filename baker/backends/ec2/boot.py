"""A new AMI's boot, measured: one instance launched from it as a user would launch it (a
throwaway key pair for the login user, nothing granted as root), timed to its first SSH
command, asked for systemd's own startup times, and removed again on every path."""

from __future__ import annotations

import contextlib
import shlex

from baker.backends.base import BuildLabel, CloudImage, MeasuredBoot
from baker.backends.ec2.access import last_lines
from baker.backends.ec2.base import BaseAmi, Log
from baker.backends.ec2.machine import Ec2Machine
from baker.edge import ssh
from baker.edge.aws import Aws
from baker.edge.ssh import BuildKeys
from baker.errors import BuildError
from baker.recipe.spec import Ec2Backend

ANALYZE_TIMEOUT_S = 300
# systemd-analyze answers only once the boot transaction is complete.
STARTUP = "systemctl is-system-running --wait >/dev/null || true; systemd-analyze time"


METHOD = (
    "one instance launched from the image per run, with a throwaway key pair for the login "
    "user; host monotonic clock from the RunInstances call (to_ssh) and from the instance "
    "seen running by polling (running_to_ssh, within the poll interval) to the first SSH "
    "command; kernel/initrd/userspace from systemd-analyze time in the instance"
)


def boot_image(
    aws: Aws, config: Ec2Backend, image: CloudImage, label: BuildLabel, log: Log
) -> MeasuredBoot:
    """Launch `image` once and time it (see the module's docstring)."""
    base = BaseAmi(image.region, image.image_id, str(image.record.get("name", "")), "self", "")
    keys = BuildKeys.generate()  # this boot's only: nothing of it outlives the instance
    machine = Ec2Machine(aws, config, BuildLabel.new(f"{label.recipe}-boot"), log)
    try:
        client = machine.launch(keys, base, root=False)
        with contextlib.closing(client):
            lines: list[str] = []
            command = f"sh -c {shlex.quote(STARTUP)}"  # the login user's own: no root
            code, tail = ssh.run(client, command, lines.append, ANALYZE_TIMEOUT_S)
        if code != 0:
            raise BuildError(
                f"`systemd-analyze time` failed on {machine.made.instance_id} (a boot of "
                f"{image.image_id}): exit {code}: {last_lines(tail)}"
            )
        times = machine.times
        return MeasuredBoot(
            to_ssh_s=round(times["ssh"] - times["launch"], 3),
            startup="\n".join(lines),
            extra={
                "running_to_ssh_s": round(times["ssh"] - times["running"], 3),
                "instance_type": config.instance_type,
                "instance_id": machine.made.instance_id,
            },
        )
    finally:
        machine.destroy()
        for left in machine.leftovers:
            log(f"left behind by the boot of {image.image_id}: {left}")

"""A cloud-init NoCloud seed for a build machine started from a vendor's cloud image: an ISO
9660 volume labelled `cidata` (made by genisoimage) whose user-data lets the build's key log
in as root and gives the machine the build's SSH host key, so the key sshd presents is known
before the machine first answers, as with baker's own bases.

What the seed must not do to the image: create the vendor's default user, rename the machine
or make host keys of its own; the capture removes cloud-init's state, logs and the
authorized_keys it wrote (baker.image.generalize, baker.build.vendor)."""

from __future__ import annotations

import json
from pathlib import Path

from baker.edge import tools
from baker.edge.ssh import BuildKeys

LABEL = "cidata"
INSTANCE_ID = "baker-build"
# Where the first boot keeps what root's SSH login files were before cloud-init wrote the
# build key into them: the capture puts them back (baker.build.steps.capture), and removes
# this directory with the rest of the build-time access (baker.image.generalize).
KEPT = "usr/local/lib/baker/vendor"
# bootcmd runs at every boot, before cloud-init's ssh module: only the first one records.
_KEEP = f"""d=/{KEPT}
[ -e "$d/root-ssh" ] && exit 0
mkdir -p "$d"
if [ -e /root/.ssh/authorized_keys ]; then cp -a /root/.ssh/authorized_keys "$d/"; fi
if [ -d /root/.ssh ]; then echo had >"$d/root-ssh"; else echo none >"$d/root-ssh"; fi
"""


def user_data(keys: BuildKeys) -> str:
    """The #cloud-config text (JSON is YAML) for the build machine."""
    kind = keys.host_public.split()[0].removeprefix("ssh-")
    config = {
        "bootcmd": [["sh", "-c", _KEEP]],
        # No default user: the image keeps the users it had (cloud-init's schema asks for
        # one entry at least and warns; an empty list is still what it does without one).
        "users": [],
        "disable_root": False,
        "ssh_authorized_keys": [keys.client_public],
        # Given keys, cloud-init makes none of its own.
        "ssh_deletekeys": True,
        "ssh_keys": {f"{kind}_private": keys.host_private, f"{kind}_public": keys.host_public},
        "preserve_hostname": True,
        "package_update": False,
        "package_upgrade": False,
    }
    return "#cloud-config\n" + json.dumps(config, indent=1) + "\n"


def make(keys: BuildKeys, iso: Path) -> Path:
    """Write the seed for a build machine with `keys` to `iso`."""
    return _write(iso, user_data(keys), INSTANCE_ID)


def launch_seed(public_key: str, iso: Path) -> Path:
    """A seed as a user's launch of the published image has one: its own instance id, so
    cloud-init makes the machine's host keys, and `public_key` let in as root."""
    config = {"disable_root": False, "ssh_authorized_keys": [public_key]}
    return _write(iso, "#cloud-config\n" + json.dumps(config) + "\n", f"launch-{iso.stem}")


def _write(iso: Path, user: str, instance_id: str) -> Path:
    # The build's host key is in the user-data: root's alone (libvirt hands the ISO to its
    # qemu user as it does the disks).
    files = iso.parent / f"{iso.stem}.d"
    files.mkdir(mode=0o700)
    (files / "user-data").write_text(user)
    (files / "meta-data").write_text(f"instance-id: {instance_id}\n")
    iso.touch(mode=0o600)
    tools.run(["genisoimage", "-quiet", "-output", iso, "-volid", LABEL, "-joliet", "-rock",
               files / "user-data", files / "meta-data"])  # fmt: skip
    return iso

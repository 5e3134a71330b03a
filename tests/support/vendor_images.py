"""Small real disks standing for a vendor's cloud image, for the unit tests of building on
one (tests/test_vendor_image.py, tests/test_vendor_as_is.py): a partition table and a root
filesystem holding just what baker's checks read, in a layout baker re-makes (GPT, one ext4
root) or in one it takes as it is (an XFS root, an MBR table)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Literal

from baker.edge import mounts
from baker.image import disk
from support.artifacts import SDE

RECIPE = """\
name: on-vendor
base:
  image: {image}
  sha256: {sha256}
  boot: {boot}
"""

DEBIAN_12 = 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_CODENAME=bookworm\n'
STATUS = "Package: base-files\nStatus: install ok installed\nVersion: 12.4\nArchitecture: amd64\n\n"
Layout = Literal["gpt-ext4", "gpt-xfs", "mbr-ext4"]


def make_vendor_image(
    work: Path,
    leave_out: tuple[str, ...] = (),
    files: dict[str, str] | None = None,
    layout: Layout = "gpt-ext4",
) -> Path:
    """A qcow2 with a BIOS boot partition (GPT) and a root holding a Debian 12 tree's
    os-release, dpkg database, cloud-init and boot links, less `leave_out`, plus `files`."""
    tree = work / "tree"
    contents = {
        "etc/os-release": DEBIAN_12,
        "var/lib/dpkg/status": STATUS,
        "usr/bin/cloud-init": "#!/bin/sh\n",
        "boot/vmlinuz-6.1": "kernel",
        "boot/initrd.img-6.1": "initrd",
        **(files or {}),
    }
    for rel, text in contents.items():
        if rel not in leave_out:
            (tree / rel).parent.mkdir(parents=True, exist_ok=True)
            (tree / rel).write_text(text)
    for link, target in (("vmlinuz", "boot/vmlinuz-6.1"), ("initrd.img", "boot/initrd.img-6.1")):
        if link not in leave_out:
            (tree / link).symlink_to(target)
    tar, raw, qcow2 = work / "root.tar", work / "disk.raw", work / "vendor.qcow2"
    subprocess.run(["tar", "--format=pax", "--numeric-owner", "-C", tree, "-cf", tar, "."],
                   check=True)  # fmt: skip
    if layout == "gpt-ext4":
        disk.assemble(tar, raw, 32, disk.DiskIds.derive("vendor-test"), SDE)
    else:
        _other_layout(tree, raw, work, layout)
    disk.to_qcow2(raw, qcow2)
    raw.unlink()
    return qcow2


def _other_layout(tree: Path, raw: Path, work: Path, layout: Layout) -> None:
    """The tree on a disk baker does not re-make: an XFS root after a BIOS boot partition
    (GPT; XFS takes 300 MiB at least, sparse here), or one ext4 partition on an MBR table."""
    fs = "xfs" if layout == "gpt-xfs" else "ext4"
    size_mib = 320 if fs == "xfs" else 32
    part = work / "root.img"
    with part.open("wb") as f:
        f.truncate(size_mib << 20)
    if fs == "xfs":
        subprocess.run(["mkfs.xfs", "-q", str(part)], check=True)
        mnt = work / "mnt"
        mnt.mkdir()
        subprocess.run(["mount", "-o", "loop", str(part), str(mnt)], check=True)
        try:
            subprocess.run(["cp", "-a", f"{tree}/.", str(mnt)], check=True)
        finally:
            mounts.unmount(mnt)
            mounts.detach_loops(part)
    else:
        subprocess.run(["mkfs.ext4", "-q", "-d", str(tree), str(part)], check=True)
    with raw.open("wb") as f:
        f.truncate((size_mib + 4) << 20)
    table = (
        "label: gpt\nstart=2048, size=2048, type=21686148-6449-6E6F-744E-656564454649\n"
        "start=4096, type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709\n"
        if layout == "gpt-xfs"
        else "label: dos\nstart=4096, type=83\n"
    )
    subprocess.run(["sfdisk", "-q", str(raw)], input=table, text=True, check=True)
    subprocess.run(["dd", f"if={part}", f"of={raw}", "bs=1M", "seek=2", "conv=notrunc,sparse",
                    "status=none"], check=True)  # fmt: skip
    part.unlink()


def write_recipe(root: Path, image: str, sha256: str, boot: str = "bios", extra: str = "") -> Path:
    """The project's recipe on the image (`extra`: more of base's fields, indented)."""
    (root / ".git").mkdir(parents=True, exist_ok=True)
    (root / "images").mkdir(exist_ok=True)
    path = root / "images" / "on-vendor.yaml"
    path.write_text(RECIPE.format(image=image, sha256=sha256, boot=boot) + extra)
    return path

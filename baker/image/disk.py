"""Making a bootable disk from a root tar, without mounting anything.

Layout (GPT, 512-byte sectors): a 1 MiB BIOS boot partition holding GRUB's core image, then
the ext4 root filesystem, written by `mkfs.ext4 -d root.tar` straight at its offset. GRUB's
boot sector and core image are patched in place, as grub-bios-setup would, so the disk boots
on any BIOS hypervisor (plain qemu, libvirt, VMware) with no -kernel. Every identifier (disk
and partition GUIDs, filesystem UUID, directory hash seed) is derived from a seed, and every
time is clamped, so the same tar and seed give the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import struct
import uuid
from dataclasses import dataclass
from pathlib import Path

from baker.edge import tools
from baker.errors import BuildError

SECTOR = 512
BIOS_BOOT_START = 2048  # sectors: the usual 1 MiB alignment
BIOS_BOOT_SECTORS = 2048
ROOT_START = BIOS_BOOT_START + BIOS_BOOT_SECTORS
ROOT_LABEL = "baker-root"
BIOS_BOOT_TYPE = "21686148-6449-6E6F-744E-656564454649"
LINUX_ROOT_X86_64_TYPE = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"
GRUB_DIR = Path("/usr/lib/grub/i386-pc")
GRUB_MODULES = ("biosdisk", "part_gpt", "ext2", "linux", "boot", "serial", "terminal", "echo")
KERNEL_CMDLINE = f"root=LABEL={ROOT_LABEL} ro console=tty0 console=ttyS0,115200n8"

# Offsets in GRUB's i386-pc boot.img and diskboot.img (grub/include/grub/i386/pc/boot.h).
_KERNEL_SECTOR = 0x5C
_BOOT_DRIVE = 0x64
_DRIVE_CHECK = 0x66
_BPB = slice(0x03, 0x5A)
_MBR_CODE_END = 0x1B8  # from here on: disk signature and partition table
_BLOCKLIST = 0x200 - 12  # the first blocklist entry at the end of diskboot.img


@dataclass(frozen=True)
class DiskIds:
    disk_guid: str
    bios_boot_guid: str
    root_guid: str
    fs_uuid: str
    hash_seed: str

    @classmethod
    def derive(cls, seed: str) -> DiskIds:
        def one(label: str) -> str:
            digest = hashlib.sha256(f"baker:{seed}:{label}".encode()).digest()
            return str(uuid.UUID(bytes=digest[:16], version=4))

        return cls(one("disk"), one("bios-boot"), one("root"), one("fs"), one("hash-seed"))


def assemble(
    root_tar: Path, raw: Path, size_mib: int, ids: DiskIds, source_date_epoch: int
) -> None:
    """Write a bootable raw disk of `size_mib` MiB at `raw` holding the tree in `root_tar`."""
    with raw.open("wb") as f:
        f.truncate(size_mib * 1024 * 1024)
    root_sectors = _partition(raw, ids)
    _make_root_fs(raw, root_tar, root_sectors, ids, source_date_epoch)
    _install_grub(raw, raw.parent / f".{raw.name}.core.img")


def to_qcow2(raw: Path, qcow2: Path) -> None:
    # In order (no -W) and uncompressed: the same raw bytes give the same qcow2 bytes.
    tools.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", raw, qcow2])


def root_offset() -> int:
    return ROOT_START * SECTOR


def _partition(raw: Path, ids: DiskIds) -> int:
    script = "\n".join(
        [
            "label: gpt",
            f"label-id: {ids.disk_guid}",
            "unit: sectors",
            "sector-size: 512",
            f"first-lba: {BIOS_BOOT_START}",
            "",
            f"start={BIOS_BOOT_START}, size={BIOS_BOOT_SECTORS}, type={BIOS_BOOT_TYPE}, "
            f'uuid={ids.bios_boot_guid}, name="bios-boot"',
            f'start={ROOT_START}, type={LINUX_ROOT_X86_64_TYPE}, uuid={ids.root_guid}, name="root"',
            "",
        ]
    )
    tools.run(
        ["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", "--wipe", "always", raw],
        stdin=script.encode(),
    )
    table = json.loads(tools.run(["sfdisk", "--json", raw]))["partitiontable"]
    root = table["partitions"][1]
    if root["start"] != ROOT_START:
        raise BuildError(f"sfdisk placed the root partition at sector {root['start']}.")
    return int(root["size"])


def _make_root_fs(raw: Path, tar: Path, sectors: int, ids: DiskIds, sde: int) -> None:
    blocks_k = sectors * SECTOR // 1024
    blocks_k -= blocks_k % 4  # whole 4 KiB blocks
    extended = ",".join(
        [
            f"offset={root_offset()}",
            f"hash_seed={ids.hash_seed}",
            "root_owner=0:0",
            "nodiscard",
            "lazy_itable_init=0",
            "lazy_journal_init=0",
        ]
    )
    tools.run(
        [
            "mkfs.ext4",
            "-q",
            "-F",
            "-b",
            "4096",
            "-L",
            ROOT_LABEL,
            "-U",
            ids.fs_uuid,
            "-E",
            extended,
            "-d",
            tar,
            raw,
            f"{blocks_k}k",
        ],
        env={"SOURCE_DATE_EPOCH": str(sde), "E2FSPROGS_FAKE_TIME": str(sde)},
    )


def grub_config() -> str:
    # Embedded in the core image: no menu, no timeout, no files under /boot/grub. The kernel
    # and initrd are found through Debian's /vmlinuz and /initrd.img links, which kernel
    # upgrades inside the image keep current.
    return "\n".join(
        [
            "serial --unit=0 --speed=115200",
            "terminal_input serial console",
            "terminal_output serial console",
            f"linux /vmlinuz {KERNEL_CMDLINE}",
            "initrd /initrd.img",
            "boot",
            "",
        ]
    )


def _install_grub(raw: Path, core: Path) -> None:
    cfg = core.with_suffix(".cfg")
    cfg.write_text(grub_config())
    try:
        # "(,gpt2)": the second partition of whichever disk the BIOS booted from.
        tools.run(
            [
                "grub-mkimage",
                "-O",
                "i386-pc",
                "-d",
                GRUB_DIR,
                "-o",
                core,
                "-c",
                cfg,
                "-p",
                "(,gpt2)/boot/grub",
                *GRUB_MODULES,
            ],
        )
        core_img = bytearray(core.read_bytes())
    finally:
        core.unlink(missing_ok=True)
        cfg.unlink(missing_ok=True)
    nsectors = -(-len(core_img) // SECTOR)
    if nsectors > BIOS_BOOT_SECTORS:
        raise BuildError(f"GRUB's core image ({len(core_img)} bytes) outgrows its partition.")
    _, length = struct.unpack_from("<QH", core_img, _BLOCKLIST)
    if length != nsectors - 1:
        raise BuildError(f"unexpected GRUB core image layout (blocklist length {length}).")
    # diskboot.img loads the rest of the core image from the sectors right after its own.
    struct.pack_into("<Q", core_img, _BLOCKLIST, BIOS_BOOT_START + 1)

    boot = bytearray((GRUB_DIR / "boot.img").read_bytes())
    with raw.open("r+b") as f:
        mbr = f.read(SECTOR)
        boot[_BPB] = mbr[_BPB]
        struct.pack_into("<Q", boot, _KERNEL_SECTOR, BIOS_BOOT_START)
        boot[_BOOT_DRIVE] = 0xFF  # use the drive the BIOS booted from
        boot[_DRIVE_CHECK : _DRIVE_CHECK + 2] = b"\x90\x90"  # hard disk: skip the floppy probe
        f.seek(0)
        f.write(bytes(boot[:_MBR_CODE_END]))
        f.seek(BIOS_BOOT_START * SECTOR)
        f.write(bytes(core_img))

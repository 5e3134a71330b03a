"""BIOS boot without grub-install: GRUB's i386-pc core image, with its configuration
embedded, written into the BIOS boot partition, and GRUB's boot sector into the MBR's code
area, patched the way grub-bios-setup patches them. The disk then boots on any BIOS
hypervisor (SeaBIOS, VMware, Hyper-V Gen1) with no -kernel and no files under /boot/grub."""

from __future__ import annotations

import struct
from pathlib import Path

from baker.edge import tools
from baker.errors import BuildError
from baker.image.layout import ROOT_PARTITION, SECTOR, grub_boot_lines

GRUB_DIR = Path("/usr/lib/grub/i386-pc")
GRUB_MODULES = ("biosdisk", "part_gpt", "ext2", "linux", "boot", "serial", "terminal", "echo")

# Offsets in GRUB's i386-pc boot.img and diskboot.img (grub/include/grub/i386/pc/boot.h).
_KERNEL_SECTOR = 0x5C
_BOOT_DRIVE = 0x64
_DRIVE_CHECK = 0x66
_BPB = slice(0x03, 0x5A)
_MBR_CODE_END = 0x1B8  # from here on: disk signature and partition table
_BLOCKLIST = 0x200 - 12  # the first blocklist entry at the end of diskboot.img


def grub_config() -> str:
    # Embedded in the core image: no menu, no timeout, no files under /boot/grub.
    return "\n".join([*grub_boot_lines(), ""])


def install(raw: Path, core: Path, start: int, sectors: int) -> None:
    """GRUB into the BIOS boot partition at sector `start` (`sectors` long) and the MBR."""
    cfg = core.with_suffix(".cfg")
    cfg.write_text(grub_config())
    try:
        # "(,gptN)": the root partition of whichever disk the BIOS booted from.
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
                f"(,gpt{ROOT_PARTITION})/boot/grub",
                *GRUB_MODULES,
            ],
        )
        core_img = bytearray(core.read_bytes())
    finally:
        core.unlink(missing_ok=True)
        cfg.unlink(missing_ok=True)
    nsectors = -(-len(core_img) // SECTOR)
    if nsectors > sectors:
        raise BuildError(f"GRUB's core image ({len(core_img)} bytes) outgrows its partition.")
    _, length = struct.unpack_from("<QH", core_img, _BLOCKLIST)
    if length != nsectors - 1:
        raise BuildError(f"unexpected GRUB core image layout (blocklist length {length}).")
    # diskboot.img loads the rest of the core image from the sectors right after its own.
    struct.pack_into("<Q", core_img, _BLOCKLIST, start + 1)

    boot = bytearray((GRUB_DIR / "boot.img").read_bytes())
    with raw.open("r+b") as f:
        mbr = f.read(SECTOR)
        boot[_BPB] = mbr[_BPB]
        struct.pack_into("<Q", boot, _KERNEL_SECTOR, start)
        boot[_BOOT_DRIVE] = 0xFF  # use the drive the BIOS booted from
        boot[_DRIVE_CHECK : _DRIVE_CHECK + 2] = b"\x90\x90"  # hard disk: skip the floppy probe
        f.seek(0)
        f.write(bytes(boot[:_MBR_CODE_END]))
        f.seek(start * SECTOR)
        f.write(bytes(core_img))

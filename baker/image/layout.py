"""Where things are on a baker disk, for each boot mode (GPT, 512-byte sectors, 1 MiB
aligned). The root filesystem is always partition 2 and always last, so that it can grow
into a larger disk, GRUB finds it as (,gpt2), and the machine sees it as /dev/vda2:

  bios    1 BIOS boot (1 MiB)                        2 root
  hybrid  1 BIOS boot (1 MiB)   3 EFI system (64 MiB)  2 root
  uefi    1 EFI system (64 MiB)                      2 root

Debian's own cloud images boot under BIOS and UEFI from one disk the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

BootMode = Literal["bios", "hybrid", "uefi"]

SECTOR = 512
FIRST = 2048  # sectors: the usual 1 MiB alignment
BIOS_BOOT_SECTORS = 2048
ESP_SECTORS = 64 * 2048
ROOT_PARTITION = 2
ROOT_LABEL = "baker-root"
ESP_LABEL = "EFI"
BIOS_BOOT_TYPE = "21686148-6449-6E6F-744E-656564454649"
ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
LINUX_ROOT_X86_64_TYPE = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"
# quiet: the kernel's and systemd's boot chatter is most of what a serial console prints, and
# each character is an emulated port write (errors, panics and the host key fingerprints
# still show).
KERNEL_CMDLINE = f"root=LABEL={ROOT_LABEL} ro console=tty0 console=ttyS0,115200n8 quiet"


def grub_boot_lines() -> list[str]:
    """What both boot paths' GRUB configurations (bios.py, esp.py) end with: the serial
    console, then Debian's /vmlinuz and /initrd.img links (kept current by kernel upgrades
    inside the image) booted with KERNEL_CMDLINE."""
    return [
        "serial --unit=0 --speed=115200",
        "terminal_input serial console",
        "terminal_output serial console",
        f"linux /vmlinuz {KERNEL_CMDLINE}",
        "initrd /initrd.img",
        "boot",
    ]


@dataclass(frozen=True)
class Partition:
    number: int
    name: str
    type: str
    start: int  # sectors
    sectors: int | None  # None: to the end of the disk


def partitions(boot: BootMode) -> list[Partition]:
    """The partitions of a disk for `boot`, in the order they lie on the disk."""
    parts: list[Partition] = []
    at = FIRST
    if boot in ("bios", "hybrid"):
        parts.append(Partition(1, "bios-boot", BIOS_BOOT_TYPE, at, BIOS_BOOT_SECTORS))
        at += BIOS_BOOT_SECTORS
    if boot in ("hybrid", "uefi"):
        parts.append(Partition(3 if boot == "hybrid" else 1, "esp", ESP_TYPE, at, ESP_SECTORS))
        at += ESP_SECTORS
    parts.append(Partition(ROOT_PARTITION, "root", LINUX_ROOT_X86_64_TYPE, at, None))
    return parts


def find(boot: BootMode, name: str) -> Partition | None:
    return next((p for p in partitions(boot) if p.name == name), None)


def root_offset(boot: BootMode = "bios") -> int:
    """The root filesystem's byte offset (a build machine's disk is always `bios`)."""
    root = find(boot, "root")
    assert root is not None
    return root.start * SECTOR

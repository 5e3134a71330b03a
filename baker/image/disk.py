"""Making a bootable disk from a root tar, without mounting anything.

The GPT and its partitions follow baker.image.layout for the boot mode; the ext4 root
filesystem is written by `mkfs.ext4 -d root.tar` straight at its offset; BIOS boot is GRUB's
core image patched into place (baker.image.bios), UEFI boot an EFI system partition with
Debian's signed shim and GRUB (baker.image.esp). Every identifier (disk and partition GUIDs,
filesystem UUID, directory hash seed) is derived from a seed and every time is clamped, so
the same tar, seed and boot mode give the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from baker.edge import tools
from baker.errors import BuildError
from baker.image import bios, esp
from baker.image.layout import (
    FIRST,
    ROOT_LABEL,
    ROOT_PARTITION,
    SECTOR,
    BootMode,
    Partition,
    find,
    partitions,
    root_offset,
)

__all__ = ["DiskIds", "assemble", "boot_config", "root_offset", "to_qcow2"]


@dataclass(frozen=True)
class DiskIds:
    disk_guid: str
    bios_boot_guid: str
    root_guid: str
    fs_uuid: str
    hash_seed: str
    esp_guid: str

    @classmethod
    def derive(cls, seed: str) -> DiskIds:
        def one(label: str) -> str:
            digest = hashlib.sha256(f"baker:{seed}:{label}".encode()).digest()
            return str(uuid.UUID(bytes=digest[:16], version=4))

        return cls(
            one("disk"), one("bios-boot"), one("root"), one("fs"), one("hash-seed"), one("esp")
        )

    def guid(self, part: Partition) -> str:
        return {"bios-boot": self.bios_boot_guid, "esp": self.esp_guid}.get(
            part.name, self.root_guid
        )


def boot_config(boot: BootMode) -> dict[str, str]:
    """What of the boot loaders decides a disk's bytes, for the content keys."""
    config = {}
    if find(boot, "bios-boot"):
        config["bios"] = bios.grub_config()
    if find(boot, "esp"):
        config["uefi"] = esp.grub_config()
    return config


def assemble(
    root_tar: Path,
    raw: Path,
    size_mib: int,
    ids: DiskIds,
    source_date_epoch: int,
    boot: BootMode = "bios",
) -> None:
    """Write a raw disk of `size_mib` MiB at `raw` holding the tree in `root_tar`, bootable
    the way `boot` says."""
    with raw.open("wb") as f:
        f.truncate(size_mib * 1024 * 1024)
    root_sectors = _partition(raw, ids, boot)
    _make_root_fs(raw, root_tar, root_sectors, ids, source_date_epoch, root_offset(boot))
    if part := find(boot, "bios-boot"):
        assert part.sectors is not None
        bios.install(raw, raw.parent / f".{raw.name}.core.img", part.start, part.sectors)
    if part := find(boot, "esp"):
        assert part.sectors is not None
        esp.write(raw, part.start, part.sectors, root_tar, source_date_epoch)


def boot_files(root_tar: Path, kernel: Path, initrd: Path) -> None:
    """The kernel and initrd Debian's /vmlinuz and /initrd.img links name in `root_tar`,
    copied out to `kernel` and `initrd`."""
    links = tools.run(["tar", "-tvf", root_tar, "./vmlinuz", "./initrd.img"])
    targets = dict(re.findall(r"\./(vmlinuz|initrd\.img) -> (\S+)", links))
    if set(targets) != {"vmlinuz", "initrd.img"}:
        raise BuildError(f"{root_tar} has no /vmlinuz and /initrd.img links to boot from.")
    members = {name: "./" + targets[name].lstrip("/") for name in targets}
    with tempfile.TemporaryDirectory(dir=kernel.parent) as tmp:
        tools.run(["tar", "-xf", root_tar, "-C", tmp, *members.values()])
        Path(tmp, members["vmlinuz"]).rename(kernel)
        Path(tmp, members["initrd.img"]).rename(initrd)


Compression = Literal["zstd", "zlib", "none"]


def to_qcow2(raw: Path, qcow2: Path, compression: Compression = "none") -> None:
    """`raw` as a qcow2, its clusters compressed as asked. Written in order (no -W): the same
    raw bytes and compression give the same qcow2 bytes, however many threads compress."""
    packed = [] if compression == "none" else ["-c", "-o", f"compression_type={compression}"]
    tools.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", *packed, raw, qcow2])


def _partition(raw: Path, ids: DiskIds, boot: BootMode) -> int:
    lines = ["label: gpt", f"label-id: {ids.disk_guid}", "unit: sectors", "sector-size: 512",
             f"first-lba: {FIRST}", ""]  # fmt: skip
    for part in partitions(boot):
        size = f", size={part.sectors}" if part.sectors is not None else ""
        # "NAME<n> :" numbers the entry: the GPT's order need not be the disk's.
        lines.append(
            f"{raw.name}{part.number} : start={part.start}{size}, type={part.type}, "
            f'uuid={ids.guid(part)}, name="{part.name}"'
        )
    tools.run(
        ["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", "--wipe", "always", raw],
        stdin=("\n".join(lines) + "\n").encode(),
    )
    table = json.loads(tools.run(["sfdisk", "--json", raw]))["partitiontable"]
    root = next(p for p in table["partitions"] if p["node"].endswith(f"{ROOT_PARTITION}"))
    if root["start"] * SECTOR != root_offset(boot):
        raise BuildError(f"sfdisk placed the root partition at sector {root['start']}.")
    return int(root["size"])


def _make_root_fs(raw: Path, tar: Path, sectors: int, ids: DiskIds, sde: int, offset: int) -> None:
    blocks_k = sectors * SECTOR // 1024
    blocks_k -= blocks_k % 4  # whole 4 KiB blocks
    extended = ",".join(
        [
            f"offset={offset}",
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

"""The EFI system partition of a UEFI-bootable disk: Debian's signed shim as the removable
boot path (\\EFI\\BOOT\\BOOTX64.EFI), Debian's signed GRUB beside it, and a grub.cfg where that
GRUB looks for one (\\EFI\\debian), so the disk boots with Secure Boot enforcing under
firmware that trusts Microsoft's UEFI CA (shim is signed by it; GRUB and the kernel by
Debian, whose key shim carries).

The binaries come from the image's own packages (shim-signed, shim-helpers-amd64-signed,
grub-efi-amd64-signed), read from the root tar, so the SBOM and the lock cover them. The FAT
filesystem is deterministic: mkfs.fat's invariant mode (fixed volume id and its own times),
every file and directory dated at the source date and copied in a fixed order by mcopy.
"""

from __future__ import annotations

import os
import shutil
import tarfile
from pathlib import Path

from baker.edge import tools
from baker.errors import BuildError
from baker.image.layout import ESP_LABEL, ROOT_LABEL, SECTOR, grub_boot_lines

# ESP path -> where the image's packages put it.
BINARIES = {
    "EFI/BOOT/BOOTX64.EFI": "usr/lib/shim/shimx64.efi.signed",
    "EFI/BOOT/mmx64.efi": "usr/lib/shim/mmx64.efi.signed",
    "EFI/BOOT/grubx64.efi": "usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed",
}
# Debian's signed GRUB reads $prefix/grub.cfg, its prefix being \EFI\debian on the disk it
# was loaded from. No fbx64.efi: shim would run it, write boot entries and reset.
GRUB_CFG = "EFI/debian/grub.cfg"
PACKAGES = ("shim-signed", "shim-helpers-amd64-signed", "grub-efi-amd64-signed")


def grub_config() -> str:
    return "\n".join(
        [f"search --no-floppy --label {ROOT_LABEL} --set=root", *grub_boot_lines(), ""]
    )


def write(raw: Path, start: int, sectors: int, root_tar: Path, sde: int) -> None:
    """Make the ESP and write it into `raw` at sector `start`."""
    work = raw.parent / f".{raw.name}.esp"
    tree, image = work / "tree", work / "esp.img"
    try:
        tree.mkdir(parents=True)
        _unpack(root_tar, tree)
        (tree / GRUB_CFG).parent.mkdir(parents=True, exist_ok=True)
        (tree / GRUB_CFG).write_text(grub_config())
        for path in sorted(tree.rglob("*"), reverse=True):
            os.utime(path, (sde, sde), follow_symlinks=False)
        with image.open("wb") as f:
            f.truncate(sectors * SECTOR)
        tools.run(["mkfs.fat", "-F", "32", "-n", ESP_LABEL, "--invariant", image],
                  env={"SOURCE_DATE_EPOCH": str(sde)})  # fmt: skip
        _copy_in(tree, image, work / "one", sde)
        with image.open("rb") as src, raw.open("r+b") as dst:
            dst.seek(start * SECTOR)
            shutil.copyfileobj(src, dst, 1 << 20)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _copy_in(tree: Path, image: Path, scratch: Path, sde: int) -> None:
    """Every directory, then every file, one at a time in sorted order: the FAT's layout
    must not follow a directory listing's order, which differs between filesystems. -m keeps
    each entry's time (the source date); a directory comes in as a one-entry tree, since
    mmd would date it now."""
    env = {"SOURCE_DATE_EPOCH": str(sde), "MTOOLS_SKIP_CHECK": "1"}
    entries = sorted(tree.rglob("*"), key=lambda p: p.relative_to(tree).parts)
    for path in entries:
        rel = path.relative_to(tree)
        target = f"::/{rel.parent.as_posix()}/" if rel.parent != Path(".") else "::/"
        if path.is_dir():
            scratch.mkdir()
            (scratch / path.name).mkdir()
            os.utime(scratch / path.name, (sde, sde))
            tools.run(["mcopy", "-s", "-m", "-i", image, scratch / path.name, target], env=env)
            shutil.rmtree(scratch)
        else:
            tools.run(["mcopy", "-m", "-i", image, path, f"{target}{path.name}"], env=env)


def _unpack(root_tar: Path, tree: Path) -> None:
    wanted = {f"./{src}": dest for dest, src in BINARIES.items()}
    found: set[str] = set()
    with tarfile.open(root_tar) as tar:
        for member in tar:
            dest = wanted.get(member.name) or wanted.get(f"./{member.name}")
            if dest is None or not member.isfile():
                continue
            target = tree / dest
            target.parent.mkdir(parents=True, exist_ok=True)
            extracted = tar.extractfile(member)
            assert extracted is not None
            with extracted, target.open("wb") as f:
                shutil.copyfileobj(extracted, f, 1 << 20)
            found.add(dest)
    if missing := sorted(set(BINARIES) - found):
        raise BuildError(
            f"the image has no {', '.join(BINARIES[m] for m in missing)} for UEFI boot "
            f"(packages {', '.join(PACKAGES)}): is base.boot right?"
        )

"""The stream-optimized vmdk fix-up: qemu-img's descriptor has a random CID (printed without
leading zeros, so its length varies) and an extent line naming the output file; both are
rewritten and the descriptor re-padded inside its fixed area. The format has no checksum over
it."""

from __future__ import annotations

import re
import struct
from pathlib import Path

from baker.errors import BuildError
from baker.formats.patching import SECTOR, derived


def fix_vmdk(path: Path, seed: str, name: str) -> None:
    """Derive the descriptor's CID from `seed` and name the extent `name`."""
    with path.open("r+b") as f:
        header = f.read(SECTOR)
        if header[:4] != b"KDMV":
            raise BuildError(f"{path.name}: not a vmdk sparse extent.")
        desc_offset, desc_size = struct.unpack_from("<QQ", header, 28)
        if not 0 < desc_size <= 2048:
            raise BuildError(f"{path.name}: unexpected vmdk descriptor size {desc_size}.")
        f.seek(desc_offset * SECTOR)
        area = f.read(desc_size * SECTOR)
        text = area.split(b"\0", 1)[0].decode("ascii")
        cid = int.from_bytes(derived(seed, "vmdk-cid")[:4], "big") & 0x7FFFFFFF or 1
        text, n_cid = re.subn(r"^CID=[0-9a-fA-F]+$", f"CID={cid:08x}", text, count=1, flags=re.M)
        text, n_ext = re.subn(
            r'^(RW \d+ SPARSE )"[^"\n]*"$', rf'\g<1>"{name}"', text, count=1, flags=re.M
        )
        if n_cid != 1 or n_ext != 1:
            raise BuildError(f"{path.name}: unexpected vmdk descriptor (no CID or extent line).")
        data = text.encode("ascii")
        if len(data) >= len(area):
            raise BuildError(f"{path.name}: the rewritten vmdk descriptor outgrows its area.")
        f.seek(desc_offset * SECTOR)
        f.write(data + bytes(len(area) - len(data)))

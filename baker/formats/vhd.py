"""The fixed vhd fix-up: the footer's timestamp (set to the build's source date) and UUID
(derived from the image digest), and the footer's one's-complement checksum over them."""

from __future__ import annotations

import os
import struct
from pathlib import Path

from baker.errors import BuildError
from baker.formats.patching import SECTOR, derived_guid, write_at

_VHD_EPOCH = 946684800  # 2000-01-01T00:00:00Z, where vhd timestamps count from
_VHD_FIXED = 2


def fix_vhd(path: Path, seed: str, source_date_epoch: int) -> None:
    with path.open("r+b") as f:
        f.seek(-SECTOR, os.SEEK_END)
        footer_at = f.tell()
        footer = bytearray(f.read(SECTOR))
        if footer[:8] != b"conectix":
            raise BuildError(f"{path.name}: no vhd footer.")
        if struct.unpack_from(">I", footer, 60)[0] != _VHD_FIXED:
            raise BuildError(f"{path.name}: not a fixed vhd.")
        struct.pack_into(">I", footer, 24, max(0, source_date_epoch - _VHD_EPOCH))
        footer[68:84] = derived_guid(seed, "vhd-uuid").bytes
        footer[64:68] = bytes(4)
        struct.pack_into(">I", footer, 64, ~sum(footer) & 0xFFFFFFFF)
        write_at(f, footer_at, footer)

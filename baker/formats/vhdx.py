"""The vhdx fix-up (MS-VHDX 1.0): each header's sequence number (random start), FileWriteGuid
and DataWriteGuid, and the Virtual Disk ID (Page 83) metadata item are random; each header
carries a CRC-32C. The log region keeps stale entries of qemu's own BAT updates, each with a
random LogGuid and a CRC-32C over it; with the header's LogGuid zero the spec says the log is
empty and must not be replayed, so the region is zeroed as in a freshly created file."""

from __future__ import annotations

import struct
import uuid
from pathlib import Path
from typing import IO

from baker.errors import BuildError
from baker.formats.patching import GuidMap, crc32c, derived, read_at, write_at, zero

_VHDX_HEADERS = (64 << 10, 128 << 10)
_VHDX_HEADER_SIZE = 4096
_VHDX_REGION_TABLE = 192 << 10
_VHDX_METADATA_REGION = uuid.UUID("8B7CA206-4790-4B9A-B8FE-575F050F886E").bytes_le
_VHDX_PAGE83 = uuid.UUID("BECA12AB-B2E6-4523-93EF-C309E000C746").bytes_le
_VHDX_GUID_FIELDS = (16, 32)  # FileWriteGuid, DataWriteGuid
_VHDX_LOG_GUID = 48


def fix_vhdx(path: Path, seed: str) -> None:
    guids = GuidMap(seed)
    with path.open("r+b") as f:
        if f.read(8) != b"vhdxfile":
            raise BuildError(f"{path.name}: not a vhdx file.")
        headers = [read_at(f, off, _VHDX_HEADER_SIZE) for off in _VHDX_HEADERS]
        if any(h[:4] != b"head" for h in headers):
            raise BuildError(f"{path.name}: a vhdx header lacks its signature.")
        sequences = [struct.unpack_from("<Q", h, 8)[0] for h in headers]
        current = headers[sequences.index(max(sequences))]
        if current[_VHDX_LOG_GUID : _VHDX_LOG_GUID + 16] != bytes(16):
            # qemu-img flushes its log before it exits; a live log would need replaying first.
            raise BuildError(f"{path.name}: qemu-img left a vhdx log to replay.")
        log_length, log_offset = struct.unpack_from("<IQ", current, 68)
        # The headers keep their relative order (the newer one stays newer); the base is the
        # digest's, where qemu's is random.
        base = int.from_bytes(derived(seed, "vhdx-sequence")[:4], "big") + 1
        low = min(sequences)
        for offset, header, sequence in zip(_VHDX_HEADERS, headers, sequences, strict=True):
            struct.pack_into("<Q", header, 8, base + sequence - low)
            for field in _VHDX_GUID_FIELDS:
                header[field : field + 16] = guids(bytes(header[field : field + 16]))
            header[4:8] = bytes(4)
            struct.pack_into("<I", header, 4, crc32c(header))
            write_at(f, offset, header)
        zero(f, log_offset, log_length)
        page83 = _page83_offset(f, path)
        write_at(f, page83, guids(bytes(read_at(f, page83, 16))))


def _page83_offset(f: IO[bytes], path: Path) -> int:
    """File offset of the Virtual Disk ID metadata item, found through the region table."""
    table = read_at(f, _VHDX_REGION_TABLE, 64 << 10)
    if table[:4] != b"regi":
        raise BuildError(f"{path.name}: the vhdx region table lacks its signature.")
    region: int
    item: int
    (count,) = struct.unpack_from("<I", table, 8)
    for i in range(min(count, 2047)):
        entry = table[16 + 32 * i : 48 + 32 * i]
        if entry[:16] == _VHDX_METADATA_REGION:
            (region,) = struct.unpack_from("<Q", entry, 16)
            break
    else:
        raise BuildError(f"{path.name}: the vhdx file has no metadata region.")
    meta = read_at(f, region, 64 << 10)
    if meta[:8] != b"metadata":
        raise BuildError(f"{path.name}: the vhdx metadata table lacks its signature.")
    (entries,) = struct.unpack_from("<H", meta, 10)
    for i in range(min(entries, 2047)):
        entry = meta[32 + 32 * i : 64 + 32 * i]
        if entry[:16] == _VHDX_PAGE83:
            item, length = struct.unpack_from("<II", entry, 16)
            if length != 16:
                raise BuildError(f"{path.name}: unexpected vhdx Virtual Disk ID length {length}.")
            return region + item
    raise BuildError(f"{path.name}: the vhdx file has no Virtual Disk ID.")

"""What the disk-format fix-ups share: identifiers derived from the image digest (so a
conversion gives the same bytes every time), CRC-32C, and reads and writes at file offsets."""

from __future__ import annotations

import hashlib
import uuid
from typing import IO

from baker.errors import BuildError

CHUNK = 1 << 20
SECTOR = 512


# --- identifiers derived from the image digest -----------------------------------------------


def derived(seed: str, label: str) -> bytes:
    return hashlib.sha256(f"baker:{seed}:{label}".encode()).digest()


def derived_guid(seed: str, label: str) -> uuid.UUID:
    return uuid.UUID(bytes=derived(seed, label)[:16], version=4)


class GuidMap:
    """Replaces each distinct random GUID by one derived from the seed, in order of first
    appearance, so GUIDs equal in qemu's output stay equal and different ones stay different."""

    def __init__(self, seed: str) -> None:
        self.seed = seed
        self.seen: dict[bytes, bytes] = {}

    def __call__(self, raw: bytes) -> bytes:
        if raw == bytes(16):
            return raw  # zero means "none" in vhdx
        if raw not in self.seen:
            self.seen[raw] = derived_guid(self.seed, f"vhdx-guid-{len(self.seen)}").bytes_le
        return self.seen[raw]


# --- CRC-32C (Castagnoli), what vhdx checksums use ---------------------------------------------
# Table-driven, a few lines: vhdx only checksums 4 KiB headers here, so speed does not matter and
# a compiled dependency would buy nothing.


def _crc32c_table() -> tuple[int, ...]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return tuple(table)


_CRC32C = _crc32c_table()


def crc32c(data: bytes | bytearray) -> int:
    crc = 0xFFFFFFFF
    for b in data:
        crc = _CRC32C[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


# --- reads and writes at an offset -------------------------------------------------------------


def read_at(f: IO[bytes], offset: int, size: int) -> bytearray:
    f.seek(offset)
    data = f.read(size)
    if len(data) != size:
        raise BuildError(f"unexpected end of file at offset {offset}.")
    return bytearray(data)


def write_at(f: IO[bytes], offset: int, data: bytes | bytearray) -> None:
    f.seek(offset)
    f.write(data)


def zero(f: IO[bytes], offset: int, length: int) -> None:
    f.seek(offset)
    zeros = bytes(min(length, CHUNK))
    while length > 0:
        length -= f.write(zeros[: min(length, len(zeros))])

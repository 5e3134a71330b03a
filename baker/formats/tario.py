"""Tar members with nothing of the machine that wrote them, and a reader that hashes a file as
tarfile copies it in: what the OVA and the air-gapped bundle both write."""

from __future__ import annotations

import hashlib
import tarfile
from collections.abc import Callable
from typing import IO


def tar_info(name: str, size: int, mtime: int) -> tarfile.TarInfo:
    """A regular file's header with nothing of the machine that wrote it: numeric owner 0, no
    owner names, mode 0644, the given time."""
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = mtime
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    return info


class HashingReader:
    """Reads a file for tarfile while hashing it and advancing a meter: one pass per file."""

    def __init__(self, f: IO[bytes], on_chunk: Callable[[int], None] | None = None) -> None:
        self.f = f
        self.hash = hashlib.sha256()
        self.count = 0
        self.on_chunk = on_chunk

    def read(self, size: int = -1) -> bytes:
        data = self.f.read(size)
        self.hash.update(data)
        self.count += len(data)
        if self.on_chunk:
            self.on_chunk(len(data))
        return data

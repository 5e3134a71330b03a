"""The byte streams a bundle is written and read through: the bundle file hashed as tarfile
writes it (on a second core), long runs of zeros left as holes, and a reader over bytes held
in memory."""

from __future__ import annotations

import hashlib
import os
import queue
import threading
from typing import Any

CHUNK = 1 << 20
_ZEROS = bytes(CHUNK)
_HOLE_MIN = 64 << 10


class BackgroundHash:
    """sha256 fed from another thread. hashlib lets go of the GIL on large buffers, so the
    bundle's own digest takes a second core instead of doubling the time per byte (each byte
    is hashed twice: as its member, against SHA256SUMS, and as part of the bundle)."""

    def __init__(self) -> None:
        self.hash = hashlib.sha256()
        self.queue: queue.Queue[bytes | None] = queue.Queue(maxsize=16)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (data := self.queue.get()) is not None:
            self.hash.update(data)

    def update(self, data: bytes) -> None:
        self.queue.put(data)

    def close(self) -> str:
        if self.thread.is_alive():
            self.queue.put(None)
            self.thread.join()
        return self.hash.hexdigest()


class HashingWriter:
    """The bundle's file, hashed as tarfile writes it (its own digest at no extra read). Long
    runs of zeros, as in a raw or fixed vhd disk, are skipped over rather than written: the
    file reads back the same bytes, but holds holes instead of gigabytes of written zeros."""

    def __init__(self, f: Any) -> None:
        self.f = f
        self.hash = BackgroundHash()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.hash.update(bytes(data))
        write_sparse(self.f, data)
        self.size += len(data)
        return len(data)

    def tell(self) -> int:
        return self.size

    def finish(self) -> None:
        self.f.truncate(self.size)  # a hole at the very end still counts

    def close(self) -> None:
        self.hash.close()  # also on failure: the thread must not outlive the export


def write_sparse(f: Any, data: bytes) -> None:
    """Write `data`, or seek over it when it is a long run of zeros (the caller truncates the
    file to its full size at the end, for a hole at the very end)."""
    n = len(data)
    if n >= _HOLE_MIN and data == (_ZEROS if n == CHUNK else _ZEROS[:n]):
        f.seek(n, os.SEEK_CUR)
    else:
        f.write(data)


class BytesReader:
    def __init__(self, data: bytes) -> None:
        self.view = memoryview(data)

    def read(self, size: int = -1) -> bytes:
        size = len(self.view) if size < 0 else size
        chunk, self.view = self.view[:size], self.view[size:]
        return bytes(chunk)

"""Streaming hashes and content keys: the identity of files and of build steps."""

from __future__ import annotations

import errno
import functools
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

_CHUNK = 1 << 20
_ZEROS = bytes(_CHUNK)
BAKER_DIR = Path(__file__).resolve().parent
TEMPLATES_DIR = BAKER_DIR.parent / "templates"


def sha256_file(path: Path, on_chunk: Callable[[bytes], None] | None = None) -> str:
    """Hash a file in one streaming pass; disk images never sit whole in memory. Holes in a
    sparse file (a 2 GiB raw disk is mostly holes) are hashed as the zeros they read as,
    without reading them. `on_chunk` sees every chunk (holes included), in order."""
    h = hashlib.sha256()

    def feed(data: bytes | memoryview) -> None:
        h.update(data)
        if on_chunk is not None:
            on_chunk(bytes(data))

    with path.open("rb") as f:
        size = os.fstat(f.fileno()).st_size
        pos = 0
        while pos < size:
            data_at = _next_data(f.fileno(), pos, size)
            while pos < data_at:  # a hole
                n = min(_CHUNK, data_at - pos)
                feed(_ZEROS if n == _CHUNK else memoryview(_ZEROS)[:n])
                pos += n
            if pos >= size:
                break
            hole_at = _next_hole(f.fileno(), pos, size)
            f.seek(pos)
            while pos < hole_at and (chunk := f.read(min(_CHUNK, hole_at - pos))):
                feed(chunk)
                pos += len(chunk)
    return h.hexdigest()


def _next_data(fd: int, pos: int, size: int) -> int:
    try:
        return os.lseek(fd, pos, os.SEEK_DATA)
    except OSError as e:
        # ENXIO: nothing but a hole is left. Anything else (no SEEK_DATA here): read it all.
        return size if e.errno == errno.ENXIO else pos


def _next_hole(fd: int, pos: int, size: int) -> int:
    try:
        return min(os.lseek(fd, pos, os.SEEK_HOLE), size)
    except OSError:
        return size


def canonical_json(value: Any) -> bytes:
    """One byte string per value: sorted keys, no whitespace, so dict order never matters."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def content_key(step: str, config: Any, previous: str | None = None) -> str:
    """A step's key: the hash of its name, of everything that decides its output, and of the
    key of the step before it (osbuild's stage ids work the same way)."""
    payload = {"step": step, "config": config, "previous": previous}
    return hashlib.sha256(canonical_json(payload)).hexdigest()


@functools.cache
def code_digest() -> str:
    """The hash of baker's own code, templates and guest files: part of every step's key, so
    that a changed step implementation never reuses an output of the old one (mkosi keys its
    cache the same way). Computed once per process."""
    h = hashlib.sha256()
    for root in (BAKER_DIR, TEMPLATES_DIR):
        files = sorted(
            p
            for p in root.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
        )
        for f in files:
            h.update(f"{f.relative_to(root.parent)}".encode() + b"\0")
            h.update(hashlib.sha256(f.read_bytes()).digest())
            h.update(b"\1" if os.access(f, os.X_OK) else b"\0")
    return h.hexdigest()

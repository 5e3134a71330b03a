"""Corruption on purpose, for the tests of what must notice it."""

from __future__ import annotations

from pathlib import Path


def flip_byte(path: Path, offset: int) -> bytes:
    """Invert every bit of the byte at `offset` of `path` in place; returns the byte it was,
    for a test that puts it back."""
    with path.open("r+b") as f:
        f.seek(offset)
        original = f.read(1)
        f.seek(offset)
        f.write(bytes([original[0] ^ 0xFF]))
    return original

"""Streaming hashes and content keys: the identity of files and of build steps."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    """Hash a file in one streaming pass; disk images never sit whole in memory."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def canonical_json(value: Any) -> bytes:
    """One byte string per value: sorted keys, no whitespace, so dict order never matters."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def content_key(step: str, config: Any, previous: str | None = None) -> str:
    """A step's key: the hash of its name, of everything that decides its output, and of the
    key of the step before it (osbuild's stage ids work the same way)."""
    payload = {"step": step, "config": config, "previous": previous}
    return hashlib.sha256(canonical_json(payload)).hexdigest()

"""A small file system for tests of a full disk: a tmpfs, unmounted however the test ends."""

from __future__ import annotations

import contextlib
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def tmpfs(size: str, directory: Path | None = None) -> Iterator[Path]:
    """A tmpfs of `size` at `directory` (made here; by default a new one under /var/tmp), mode
    0711 so that the hypervisor's user can reach what a build puts in it."""
    if directory is None:
        mount = Path(tempfile.mkdtemp(prefix="baker-test-small-", dir="/var/tmp"))
    else:
        mount = directory
        mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0711", "tmpfs", mount],
                   check=True)  # fmt: skip
    try:
        yield mount
    finally:
        subprocess.run(["umount", "--lazy", mount], check=False)
        mount.rmdir()

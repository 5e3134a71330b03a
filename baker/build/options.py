"""What every build has, whatever its backend: options, result, a throwaway work directory,
and the record of the tools it ran with."""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import libvirt

from baker.cache import Cache
from baker.edge import tools


@dataclass(frozen=True)
class Options:
    out: Path = Path("out")
    accel: str = "auto"
    cache: Cache = field(default_factory=Cache)
    sign_key: Path | None = None
    measure: bool = True  # a rebuild that only compares digests skips the boot measurement
    work_root: Path | None = None  # where the throwaway work directory goes


@dataclass(frozen=True)
class Result:
    digest: str
    artifact: Path


@contextlib.contextmanager
def workdir(root: Path | None) -> Iterator[Path]:
    base = root or Path(os.environ.get("BAKER_WORK_DIR", "/var/tmp"))
    base.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix="baker-", dir=base))
    # libvirt runs qemu as its own user: it must traverse to the overlay it is given.
    path.chmod(0o711)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def display_path(path: Path) -> str:
    """The recipe's path relative to where baker runs when it is below it (the repository)."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def tool_versions() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "libvirt": ".".join(str(libvirt.getVersion() // 10**i % 1000) for i in (6, 3, 0)),
        "qemu": tools.version(["qemu-system-x86_64", "--version"]),
        "qemu-img": tools.version(["qemu-img", "--version"]),
        "mmdebstrap": tools.version(["mmdebstrap", "--version"]),
        "mke2fs": tools.version(["mke2fs", "-V"]),
        "grub-mkimage": tools.version(["grub-mkimage", "--version"]),
        "tar": tools.version(["tar", "--version"]),
        "kernel": platform.release(),
    }

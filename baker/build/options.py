"""What a build is asked to do, whatever its backend: the options, the result, and the
throwaway work directory it runs in."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from baker.cache import Cache


@dataclass(frozen=True)
class Options:
    out: Path = Path("out")
    accel: str = "auto"
    cache: Cache = field(default_factory=Cache)
    sign_key: Path | None = None
    measure: bool = True  # a rebuild that only compares digests skips the boot measurement
    work_root: Path | None = None  # where the throwaway work directory goes
    no_cache: bool = False  # run every step; look nothing up (outputs are still stored)


@dataclass(frozen=True)
class Result:
    digest: str  # sha256:<hex> of the image, or an EC2 build's ec2:REGION:AMI-ID
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

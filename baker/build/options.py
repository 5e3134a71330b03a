"""What a build is asked to do, whatever its backend: the options, the result, and the
throwaway work directory it runs in."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from baker import leftovers
from baker.cache import Cache
from baker.edge import mounts


@dataclass(frozen=True)
class Options:
    out: Path = Path("out")
    accel: str = "auto"
    cache: Cache = field(default_factory=Cache)
    sign_key: Path | None = None
    measure: bool = True  # a rebuild that only compares digests skips the boot measurement
    work_root: Path | None = None  # where the throwaway work directory goes
    no_cache: bool = False  # run every step; look nothing up (outputs are still stored)
    # What a failed provisioner or test does to the machine: abort (destroy it), keep it
    # running for a look, or ask (on a terminal) through `decide`.
    on_error: Literal["abort", "keep", "ask"] = "abort"
    decide: Callable[[Failure], str] | None = None


@dataclass(frozen=True)
class Failure:
    """A failed step, for an `--on-error ask` prompt: what failed, and how to reach the
    machine it failed on."""

    step: str
    error: str
    ssh: str  # the command that logs in to the machine


@dataclass(frozen=True)
class Result:
    digest: str  # sha256:<hex> of the image, or an EC2 build's ec2:REGION:AMI-ID
    artifact: Path


def work_root(root: Path | None = None) -> Path:
    """Where work directories go: `root`, $BAKER_WORK_DIR, or /var/tmp."""
    return root or Path(os.environ.get("BAKER_WORK_DIR", "/var/tmp"))


@contextlib.contextmanager
def workdir(root: Path | None) -> Iterator[Path]:
    """A throwaway work directory, removed on the way out unless the build kept it (its
    owner.json says so: `--on-error keep`); `baker clean` removes it then."""
    base = work_root(root)
    base.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix="baker-", dir=base))
    # libvirt runs qemu as its own user: it must traverse to the overlay it is given.
    path.chmod(0o711)
    leftovers.write_owner(path, leftovers.Owner.me())
    try:
        yield path
    finally:
        owner = leftovers.read_owner(path)
        if owner is None or not owner.kept:
            # A step's own cleanup unmounts what it mounted; this catches a mount a stop
            # signal cut off half-way, which rmtree would otherwise reach into.
            mounts.release_under(path)
            shutil.rmtree(path, ignore_errors=True)


def display_path(path: Path) -> str:
    """The recipe's path relative to where baker runs when it is below it (the repository)."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)

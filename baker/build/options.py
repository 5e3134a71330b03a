"""What a build is asked to do, whatever its backend: the options, the result, and the
throwaway work directory it runs in."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

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


def display_path(path: Path) -> str:
    """The recipe's path relative to where baker runs when it is below it (the repository)."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)

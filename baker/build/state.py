"""What a build knows: the frozen Context every step reads, and the one typed BuildState the
steps fill in as they run (or as the runner restores their cached outputs)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from cryptography.hazmat.primitives.asymmetric import ec

from baker.backends.accel import Accel
from baker.backends.base import Backend, BuildLabel, CloudBase, CloudImage, Guest, Machine
from baker.build.options import Options
from baker.edge.ssh import BuildKeys
from baker.image.packages import Package
from baker.progress import Reporter
from baker.recipe.lock import Lock
from baker.recipe.spec import Spec

Status = Literal["ran", "reused", "skipped"]


@dataclass(frozen=True)
class Context:
    """Everything a step may read that no step changes."""

    spec: Spec
    opts: Options
    accel: Accel
    backend: Backend
    work: Path  # the throwaway work directory, removed when the build ends
    reporter: Reporter
    locked: Lock | None
    lock_file: Path
    source_date_epoch: int  # every file time in the image is clamped to it
    sign_key: ec.EllipticCurvePrivateKey | None
    started: dt.datetime


@dataclass(frozen=True)
class Outcome:
    """What became of one step: build.json's `steps` entry."""

    key: str | None
    status: Status
    seconds: float | None


@dataclass(frozen=True)
class BuiltImage:
    path: Path  # the qcow2 (in the step cache once stored)
    digest: str  # sha256:<hex> of the qcow2: the image digest
    raw_digest: str  # sha256:<hex> of the raw disk it holds
    size: int


@dataclass(frozen=True)
class TestResults:
    tests: int
    failures: int
    errors: int
    skipped: int
    failed: tuple[str, ...]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TestResults:
        return cls(d["tests"], d["failures"], d["errors"], d["skipped"], tuple(d["failed"]))

    def as_dict(self) -> dict[str, Any]:
        return {
            "tests": self.tests,
            "failures": self.failures,
            "errors": self.errors,
            "skipped": self.skipped,
            "failed": list(self.failed),
        }


@dataclass
class BuildState:
    """Filled in step by step; build.json is written from it."""

    label: BuildLabel
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    # base
    root_tar: Path | None = None
    base_digest: str | None = None
    cloud_base: CloudBase | None = None
    # disk
    base_disk: Path | None = None
    # boot .. shutdown
    access: BuildKeys | None = None
    machine: Machine | None = None
    guest: Guest | None = None
    machine_record: dict[str, Any] = field(default_factory=dict)
    provisioned: int = 0  # how many provisioners have run on this machine
    # verify
    tests: TestResults | None = None
    junit: Path | None = None
    # shutdown (a cloud machine), capture, image
    generalized: dict[str, Any] | None = None  # what was removed on the machine itself
    captured_tar: Path | None = None
    dpkg_status: str = ""
    copyrights: dict[str, str] = field(default_factory=dict)
    image: BuiltImage | None = None
    cloud_image: CloudImage | None = None
    packages: list[Package] = field(default_factory=list)
    # measure
    boot: dict[str, Any] | None = None
    # attest, publish
    files: dict[str, Path] = field(default_factory=dict)  # artifact name -> where it is now
    known_sha256: dict[str, str] = field(default_factory=dict)  # hashes already computed
    artifact: Path | None = None
    result: str | None = None  # the last line `baker build` prints


T = TypeVar("T")


def need(value: T | None, what: str) -> T:
    """A state field an earlier step must have filled: a missing one is a pipeline bug."""
    if value is None:
        raise RuntimeError(f"the pipeline reached a step that needs {what} without it")
    return value

"""What a build knows: the frozen Context every step reads, and the one typed BuildState the
steps fill in as they run (or as the runner restores their cached outputs)."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from cryptography.hazmat.primitives.asymmetric import ec

from baker.artifact import BootRecord, ImageRecord
from baker.backends.accel import Accel
from baker.backends.base import (
    Backend,
    BaseDisk,
    BuildLabel,
    CloudBase,
    CloudImage,
    DiskImage,
    Guest,
    Machine,
    MachineRecord,
)
from baker.build.options import Options
from baker.build.parent import Parent
from baker.cache import Entry
from baker.edge.ssh import BuildKeys
from baker.image.generalize import Generalized
from baker.image.packages import Package, parse_status
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
    parent: Parent | None = None  # base.image, verified
    # The build secrets' values (baker.build.secrets): in memory only, never in a record.
    secrets: dict[str, str] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class StepOutcome:
    """What became of one step: build.json's `steps` entry."""

    key: str | None
    status: Status
    seconds: float | None


@dataclass(frozen=True)
class BasePin:
    """What the build started from, as build.json pins it: a Debian root tree (what decided
    it, and its tar's digest), or a cloud's base image."""

    config: dict[str, Any] | None = None
    digest: str | None = None  # sha256:<hex> of the root tar
    cloud: dict[str, Any] | None = None  # a cloud base image's pin (an AMI)

    def as_dict(self) -> dict[str, Any]:
        return {"config": self.config, "digest": self.digest, "cloud": self.cloud}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BasePin:
        return cls(d.get("config"), d.get("digest"), d.get("cloud"))


@dataclass(frozen=True)
class BuiltImage:
    """A local image the image step made."""

    path: Path  # the qcow2 (in the step cache once stored)
    digest: str  # sha256:<hex> of the qcow2: the image digest
    raw_digest: str  # sha256:<hex> of the raw disk it holds
    size: int


@dataclass(frozen=True)
class Made:
    """What the image step made, as every later step needs it, whatever the backend."""

    image: DiskImage | CloudImage  # the published image, as its backend boots it
    name: str  # what the evidence calls it: image.qcow2, or ec2:REGION:AMI-ID
    digest: str  # sha256:<hex> the evidence names: the qcow2's, or an AMI's raw volume's
    signed: str  # the artifact file the signature is over (image.qcow2, ami.json)
    record: ImageRecord  # build.json's `image`
    ids: dict[str, str]  # what boot.json names it by: {"image": digest} (and an image id)
    result: str  # the line `baker build` prints last


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
    outcomes: dict[str, StepOutcome] = field(default_factory=dict)
    # base, disk
    base: BasePin | None = None
    root_tar: Path | None = None
    start_from: BaseDisk | CloudBase | None = None  # what the build machine boots
    # boot .. shutdown
    access: BuildKeys | None = None
    machine: Machine | None = None
    guest: Guest | None = None
    machine_record: MachineRecord | None = None
    provisioned: int = 0  # how many provisioners have run on this machine
    own_packages: bool = False  # a child's base.packages are installed on this machine
    # verify
    tests: TestResults | None = None
    junit: Path | None = None
    # generalize (a cloud machine), capture, image
    generalized: Generalized | None = None  # what was removed on the machine itself
    captured_tar: Path | None = None
    dpkg_status: str = ""
    copyrights: dict[str, str] = field(default_factory=dict)
    packages: list[Package] = field(default_factory=list)
    image: BuiltImage | None = None  # a local image's own details
    made: Made | None = None
    scan: dict[str, Any] | None = None  # build.json's `scan`, when the build scanned
    # measure
    boot: BootRecord | None = None
    # attest, publish
    files: dict[str, Path] = field(default_factory=dict)  # artifact name -> where it is now
    known_sha256: dict[str, str] = field(default_factory=dict)  # hashes already computed
    artifact: Path | None = None


# The files a cache entry carries for the steps it makes unneeded.
CARRIED_JUNIT = "carried-junit.xml"
CARRIED_DPKG_STATUS = "carried-dpkg-status"
CARRIED_COPYRIGHTS = "carried-copyrights.json"


@dataclass(frozen=True)
class Carried:
    """What a step's cached output carries of the steps before it, which reusing it makes
    unneeded: so that a reused entry records the same build as a built one (the base it
    started from, the tests and their results, the packages, the machine)."""

    base: BasePin | None = None
    tests: TestResults | None = None
    machine: MachineRecord | None = None
    generalized: Generalized | None = None

    @classmethod
    def of(cls, state: BuildState, work: Path) -> tuple[dict[str, Any], dict[str, Path]]:
        """What to store of `state`: entry metadata, and files (written into `work`)."""
        carried = cls(state.base, state.tests, state.machine_record, state.generalized)
        files: dict[str, Path] = {}
        if state.junit is not None:
            files[CARRIED_JUNIT] = state.junit
        if state.dpkg_status:
            (work / CARRIED_DPKG_STATUS).write_text(state.dpkg_status)
            (work / CARRIED_COPYRIGHTS).write_text(json.dumps(state.copyrights, sort_keys=True))
            files[CARRIED_DPKG_STATUS] = work / CARRIED_DPKG_STATUS
            files[CARRIED_COPYRIGHTS] = work / CARRIED_COPYRIGHTS
        return carried.as_meta(), files

    def as_meta(self) -> dict[str, Any]:
        return {
            "base": self.base.as_dict() if self.base else None,
            "tests": self.tests.as_dict() if self.tests else None,
            "machine": self.machine.fields if self.machine else None,
            "generalized": self.generalized.as_dict() if self.generalized else None,
        }

    @staticmethod
    def restore(state: BuildState, entry: Entry) -> None:
        """Fill what `state` lacks from a reused entry's carried record."""
        meta = entry.meta.get("carried") or {}
        if meta.get("base") and state.base is None:
            state.base = BasePin.from_dict(meta["base"])
        if meta.get("tests"):
            state.tests = TestResults.from_dict(meta["tests"])
        if meta.get("machine") is not None:
            state.machine_record = MachineRecord(meta["machine"])
        if meta.get("generalized"):
            state.generalized = Generalized.from_dict(meta["generalized"])
        if CARRIED_JUNIT in entry.files:
            state.junit = entry.file(CARRIED_JUNIT)
        if CARRIED_DPKG_STATUS in entry.files:
            state.dpkg_status = entry.file(CARRIED_DPKG_STATUS).read_text()
            state.packages = parse_status(state.dpkg_status)
            state.copyrights = json.loads(entry.file(CARRIED_COPYRIGHTS).read_text())


T = TypeVar("T")


def need(value: T | None, what: str) -> T:
    """A state field an earlier step must have filled: a missing one is a pipeline bug."""
    if value is None:
        raise RuntimeError(f"the pipeline reached a step that needs {what} without it")
    return value

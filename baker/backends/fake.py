"""A fake backend, for testing the pipeline's order, cleanup and caching without a VM
(Packer's drivers come with one, for the same reason).

Its machines run nothing: a FakeGuest records what it is asked to do, and answers a command
with a failure when told to. What a machine hands back is either a fake cloud image, or (with
`hands_back="disk"`) a small real disk holding a tree that records every command and upload,
so that the capture and image steps run for real and a changed provisioner changes the image.
The tests reach it through testinfra's local backend. Every call lands in `journal`.
"""

from __future__ import annotations

import io
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from baker.backends.base import (
    BaseDisk,
    BootPlan,
    BuildLabel,
    CloudBase,
    CloudImage,
    DiskImage,
    HandsBack,
    Machine,
    MachineRecord,
    MeasuredBoot,
    OnLine,
    StartsFrom,
)
from baker.edge.ssh import BuildKeys
from baker.errors import BuildError
from baker.image import disk

# Enough of a dpkg database for the package list and the SBOMs.
FAKE_DPKG_STATUS = b"""Package: fake-base
Status: install ok installed
Version: 1.0
Architecture: amd64

"""


FAKE_COPYRIGHT = b"Files: *\nLicense: MIT\n"
# A fake cloud image's raw volume: 1 MiB of zeros.
FAKE_RAW_DIGEST = "sha256:30e14955ebf1352266dc2ff8067e68104607e750abb9d3b36582b8af909fcb58"


@dataclass(frozen=True)
class FakeBase:
    image_id: str = "fake-base-1"

    def pin(self) -> dict[str, Any]:
        return {"image_id": self.image_id}


@dataclass
class FakeGuest:
    machine: FakeMachine
    closed: bool = False

    @property
    def backend(self) -> FakeBackend:
        return self.machine.backend

    def run(
        self, command: str, on_line: OnLine, timeout: float, stdin: bytes = b""
    ) -> tuple[int, list[str]]:
        self.backend.journal.append(f"run {command}")
        self.machine.done.append(command.encode())
        if stdin:
            self.machine.done.append(stdin)
        if self.backend.fail_on and self.backend.fail_on in command:
            on_line("failing as told")
            return 3, ["failing as told"]
        return 0, []

    def upload(self, data: bytes | Path, remote: str, mode: int) -> None:
        self.backend.journal.append(f"upload {remote}")
        self.machine.done.append(data.read_bytes() if isinstance(data, Path) else data)

    def read(self, remote: str) -> bytes:
        if remote == "/var/lib/dpkg/status":
            return FAKE_DPKG_STATUS
        if remote.endswith("copyrights.tar"):
            out = io.BytesIO()
            with tarfile.open(fileobj=out, mode="w") as tar:
                _add(tar, "usr/share/doc/fake-base/copyright", FAKE_COPYRIGHT)
            return out.getvalue()
        raise BuildError(f"could not read {remote} on the fake machine.")

    def close(self) -> None:
        if not self.closed:
            self.backend.journal.append("close guest")
        self.closed = True


@dataclass
class FakeMachine:
    backend: FakeBackend
    name: str
    workdir: Path
    stopped: bool = False
    destroyed: bool = False
    done: list[bytes] = field(default_factory=list)  # every command and upload, in order

    def connect(self, timeout: float) -> FakeGuest:
        self.backend.journal.append("connect")
        if self.backend.fail_on == "connect":
            raise BuildError("the fake machine did not answer.")
        return FakeGuest(self)

    def test_target(self) -> str:
        return "local://"

    def alive(self) -> bool:
        return not (self.stopped or self.destroyed)

    def console_tail(self, lines: int = 15) -> str:
        return "(fake console)"

    def stop(self, guest: Any, timeout: float) -> None:
        guest.close()
        self.backend.journal.append("stop")
        if self.backend.fail_on == "stop":
            raise BuildError("the fake machine did not stop.")
        self.stopped = True

    def hand_back(self) -> DiskImage | CloudImage:
        self.backend.journal.append("hand back")
        if self.backend.fail_on == "hand back":
            raise BuildError("the fake machine made no image.")
        if self.backend.hands_back == "cloud-image":
            self.backend.made += 1
            image_id = f"fake-image-{self.backend.made}"
            self.backend.images.add(image_id)
            record = {"image_id": image_id, "raw_digest": FAKE_RAW_DIGEST}
            return CloudImage("fake-region", image_id, FAKE_RAW_DIGEST, record, "fake")
        return DiskImage(self._disk())

    def _disk(self) -> Path:
        tree = self.workdir / "fake-root.tar"
        with tarfile.open(tree, "w") as tar:
            _add(tar, "var/lib/dpkg/status", FAKE_DPKG_STATUS)
            for i, data in enumerate(self.done):
                _add(tar, f"etc/fake/{i:02d}", data)
        raw = self.workdir / "fake-disk.raw"
        disk.assemble(tree, raw, 1024, disk.DiskIds.derive("fake"), 0)
        tree.unlink()
        return raw

    def record(self) -> MachineRecord:
        return MachineRecord({"fake": self.name})

    def destroy(self) -> None:
        if not self.destroyed:
            self.backend.journal.append("destroy")
        self.destroyed = True


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    for i in range(1, name.count("/") + 1):
        d = tarfile.TarInfo("/".join(name.split("/")[:i]))
        d.type, d.mode = tarfile.DIRTYPE, 0o755
        if d.name not in tar.getnames():
            tar.addfile(d)
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), 0o644
    tar.addfile(info, io.BytesIO(data))


@dataclass
class FakeBackend:
    hands_back: HandsBack = "cloud-image"
    fail_on: str | None = None  # fail a guest command containing this, or a named phase
    kind: str = "fake"
    starts_from: StartsFrom = "cloud"
    journal: list[str] = field(default_factory=list)
    images: set[str] = field(default_factory=set)  # cloud images that still exist
    made: int = 0
    machines: list[FakeMachine] = field(default_factory=list)

    def key_config(self) -> dict[str, Any]:
        return {"type": "fake", "hands_back": self.hands_back}

    def resolve_base(self) -> CloudBase:
        self.journal.append("resolve base")
        return FakeBase()

    def start(
        self, base: BaseDisk | CloudBase, keys: BuildKeys, workdir: Path, label: BuildLabel
    ) -> FakeMachine:
        self.journal.append("start")
        if self.fail_on == "start":
            raise BuildError("the fake machine did not start.")
        machine = FakeMachine(self, label.name, workdir)
        self.machines.append(machine)
        return machine

    def image_exists(self, image: CloudImage) -> bool:
        return image.image_id in self.images

    def boot_plan(self, boot: str, runs: int) -> BootPlan:
        return BootPlan(
            accel="fake",
            firmware=(("fake", runs),),
            method="no boot at all",
            labels={"instance_type": "fake"},
        )

    def boot_image(
        self,
        image: DiskImage | CloudImage,
        firmware: str,
        workdir: Path,
        label: BuildLabel,
        detail: bool,
    ) -> MeasuredBoot:
        self.journal.append(f"boot {image.image_id if isinstance(image, CloudImage) else 'disk'}")
        if self.fail_on == "boot image":
            raise BuildError("the fake image did not boot.")
        startup = "Startup finished in 1.000s (kernel) + 2.000s (userspace) = 3.000s"
        return MeasuredBoot(4.0, startup, extra={"running_to_ssh_s": 3.5, "instance_type": "fake"})

    def record_fields(self, machine: MachineRecord | None) -> dict[str, Any]:
        return {}


@dataclass
class ResumingFakeBackend(FakeBackend):
    """The fake, able to save a machine and resume it (baker.backends.base.Resumes)."""

    def saved_config(self) -> dict[str, Any]:
        return {"type": "fake", "saved": 1}

    def save(self, machine: Machine, into: Path) -> None:
        self.journal.append("save")
        if not isinstance(machine, FakeMachine):
            raise TypeError(f"the fake saves its own machines, not {machine!r}")
        (into / "state").write_text(f"the state of {machine.name}")
        machine.stopped = True

    def resume(
        self,
        saved: Path,
        base: BaseDisk | CloudBase,
        keys: BuildKeys,
        workdir: Path,
        label: BuildLabel,
    ) -> FakeMachine:
        self.journal.append(f"resume {(saved / 'state').read_text()}")
        if self.fail_on == "resume":
            raise BuildError("the fake machine did not resume.")
        machine = FakeMachine(self, label.name, workdir)
        self.machines.append(machine)
        return machine


if TYPE_CHECKING:
    from baker.backends.base import CloudBackend, Guest, Resumes

    def _conforms(
        backend: FakeBackend, resuming: ResumingFakeBackend, machine: FakeMachine, guest: FakeGuest
    ) -> tuple[CloudBackend, Resumes, Machine, Guest]:
        """Never called: mypy checks here that the fakes implement the interface."""
        return backend, resuming, machine, guest

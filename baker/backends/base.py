"""The backend interface: the one way the pipeline reaches a machine.

A backend starts a throwaway machine from a base, gives a root session on it (a Guest) and a
target for the tests, stops it cleanly, and hands back what it made: a disk to capture, or a
cloud image. It boots the published image to measure it, and says what it adds to build.json.
libvirt, EC2 and a fake for the unit tests implement it (Packer's Driver interface, with its
fake, is the model); a cloud backend also resolves its base image (CloudBackend).

What a backend starts from and what it hands back are declared up front, so the pipeline can
assemble its steps, and the runner plan its cache look-ups, before anything runs.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from baker.edge.ssh import BuildKeys, Endpoint

# What a machine is started from: a local disk made by the base and disk steps ("debian"),
# or a base image the backend itself resolves, such as an AMI ("cloud").
StartsFrom = Literal["debian", "cloud"]
# What a stopped machine hands back: its disk ("disk") or a cloud image ("cloud-image").
HandsBack = Literal["disk", "cloud-image"]


@dataclass(frozen=True)
class BuildLabel:
    """What names and tags everything one build starts: domains, instances, key pairs."""

    recipe: str
    build_id: str
    step_keys: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def new(cls, recipe: str, step_keys: Mapping[str, str] | None = None) -> BuildLabel:
        return cls(recipe, uuid.uuid4().hex, dict(step_keys or {}))

    @property
    def name(self) -> str:
        return f"baker-{self.recipe}-{self.build_id[:8]}"

    def tags(self) -> dict[str, str]:
        values = {"Name": self.name, "baker:recipe": self.recipe, "baker:build": self.build_id}
        values.update({f"baker:key:{step}": key for step, key in self.step_keys.items()})
        return values


@dataclass(frozen=True)
class BaseDisk:
    """A local base disk (raw), which a machine only ever reads; with the kernel and initrd
    it holds, a backend that can hands them to the hypervisor directly (no firmware, no GRUB:
    seconds less under emulation)."""

    path: Path
    kernel: Path | None = None
    initrd: Path | None = None
    # A vendor's cloud image is reached as its vendor intends, through a cloud-init NoCloud
    # seed (baker.backends.nocloud); baker's own trees through their SMBIOS access unit.
    seed: bool = False


class CloudBase(Protocol):
    """A base image a cloud backend resolved; its pin is recorded in build.json."""

    def pin(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class DiskImage:
    """A stopped machine's disk, to be captured; or a published one, to be booted."""

    path: Path
    # Launched with a cloud-init NoCloud seed, as a vendor's cloud image is (it makes its
    # host keys at first boot through cloud-init, and has nothing else that would).
    seed: bool = False


@dataclass(frozen=True)
class CloudImage:
    """An image a cloud made of a stopped machine: what ami.json holds (`record`), and the
    digest of the raw volume it holds, read back from the cloud."""

    region: str
    image_id: str
    raw_digest: str  # sha256:<hex> of the raw root volume
    record: dict[str, Any]
    cloud: str = "ec2"

    @property
    def ref(self) -> str:
        """The build's result line (`baker build` prints it last): ec2:REGION:AMI-ID."""
        return f"{self.cloud}:{self.region}:{self.image_id}"


@dataclass(frozen=True)
class MachineRecord:
    """What build.json keeps of a build machine: fields only its backend knows (an EC2
    instance's id, type and host key), placed in build.json by `Backend.record_fields`."""

    fields: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SshTarget:
    """Where the testinfra tests log in: the machine's endpoint, with its host key pinned."""

    endpoint: Endpoint
    keys: BuildKeys
    user: str = "root"


OnLine = Callable[[str], None]


class Guest(Protocol):
    """A root session on a running build machine."""

    def run(
        self, command: str, on_line: OnLine, timeout: float, stdin: bytes = b""
    ) -> tuple[int, list[str]]:
        """Run a shell command with `stdin` as its input; stream each output line; return the
        exit code and the last lines."""
        ...

    def upload(self, data: bytes | Path, remote: str, mode: int) -> None:
        """Write `data`, or the file at that path (streamed), to `remote` with `mode`."""
        ...

    def read(self, remote: str) -> bytes: ...

    def close(self) -> None: ...


class Machine(Protocol):
    name: str

    def connect(self, timeout: float) -> Guest:
        """Log in as root the moment the machine answers, with its host key checked."""
        ...

    def test_target(self) -> SshTarget | str:
        """Where the tests reach the machine: SSH, or a testinfra host spec (the fake's)."""
        ...

    def alive(self) -> bool: ...

    def console_tail(self, lines: int = 15) -> str: ...

    def stop(self, guest: Guest, timeout: float) -> None:
        """Shut the machine down cleanly through `guest` (which it closes), and wait."""
        ...

    def hand_back(self) -> DiskImage | CloudImage:
        """What the stopped machine made."""
        ...

    def record(self) -> MachineRecord:
        """What build.json keeps of the machine (see Backend.record_fields)."""
        ...

    def destroy(self) -> None:
        """Stop at once and release everything; never raises; safe to call twice."""
        ...


@dataclass(frozen=True)
class BootPlan:
    """How a backend measures a published image's boot: `accel` is what boot.json names the
    place it ran (kvm, tcg, or a cloud: ec2), `firmware` each boot path with its number of
    boots, in the order they run (the first is the image's main path)."""

    accel: str
    firmware: tuple[tuple[str, int], ...]
    method: str  # how it was measured, in words, for boot.json
    key: dict[str, Any] = field(default_factory=dict)  # what else can change the figures
    labels: dict[str, str] = field(default_factory=dict)  # boot.json's words on where it ran


@dataclass(frozen=True)
class MeasuredBoot:
    """One boot of a published image, timed by the host's monotonic clock."""

    to_ssh_s: float  # from the start (a launch request, qemu's start) to the first SSH command
    startup: str  # `systemd-analyze time` as the booted machine printed it
    first_output_s: float | None = None  # to the first console output, where it can be seen
    blame: str | None = None  # `systemd-analyze blame`, when asked for
    extra: dict[str, Any] = field(default_factory=dict)  # the backend's own figures and ids


class Backend(Protocol):
    """Where build machines run. `starts_from` and `hands_back` say what it needs and makes,
    so that baker.build.pipeline.steps() can put its steps together before anything runs."""

    kind: str
    starts_from: StartsFrom
    hands_back: HandsBack

    def key_config(self) -> dict[str, Any]:
        """What of the backend's settings can change the image (for the boot step's key)."""
        ...

    def start(
        self, base: BaseDisk | CloudBase, keys: BuildKeys, workdir: Path, label: BuildLabel
    ) -> Machine:
        """Start a machine; on failure, whatever was made for it is gone before the error."""
        ...

    def boot_plan(self, boot: str, runs: int) -> BootPlan:
        """How the published image's boot is measured: `boot` is the recipe's boot mode
        (bios, uefi, hybrid), `runs` its boot_runs."""
        ...

    def boot_image(
        self,
        image: DiskImage | CloudImage,
        firmware: str,
        workdir: Path,
        label: BuildLabel,
        detail: bool,
    ) -> MeasuredBoot:
        """Boot the published `image` once, fresh, the way a user launches it, under
        `firmware` (one of the plan's), time it to SSH, read its startup times (with
        `detail`, also the slowest units) and remove all of it again, on every path."""
        ...

    def record_fields(self, machine: MachineRecord | None) -> dict[str, Any]:
        """The fields this backend adds to build.json (BuildRecord's), from what the build
        machine recorded (None when the image came from the step cache without it)."""
        ...


@runtime_checkable
class Resumes(Backend, Protocol):
    """A backend that can save a running build machine and start later ones from it."""

    def saved_config(self) -> dict[str, Any]:
        """What a saved machine depends on besides its disk: memory, vCPUs, machine type,
        firmware, accelerator, the hypervisor's version."""
        ...

    def save(self, machine: Machine, into: Path) -> None:
        """Save the running `machine` into the directory `into` (its memory and device
        state, and the layer its disk wrote over the base), which stops it."""
        ...

    def resume(
        self,
        saved: Path,
        base: BaseDisk | CloudBase,
        keys: BuildKeys,
        workdir: Path,
        label: BuildLabel,
    ) -> Machine:
        """A new machine running on from the one saved in `saved` (over `base`), with its own
        overlay, port and name; `saved` is only read, so several may resume it at once. On
        failure, whatever was made for it is gone before the error."""
        ...


@runtime_checkable
class CloudBackend(Backend, Protocol):
    """A backend that starts from a cloud's own base image and hands back a cloud image."""

    def resolve_base(self) -> CloudBase:
        """The cloud base image to start from."""
        ...

    def image_exists(self, image: CloudImage) -> bool:
        """Whether a cloud image from the step cache is still there to be reused."""
        ...

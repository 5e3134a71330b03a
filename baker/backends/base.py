"""The backend interface: the one way the pipeline reaches a machine.

A backend starts a throwaway machine from a base, gives a root session on it (a Guest) and a
target for the tests, stops it cleanly, and hands back what it made: a disk to capture, or a
cloud image. libvirt, EC2 and a fake for the unit tests implement it (Packer's Driver
interface, with its fake, is the model).

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
    """A local base disk (raw), which a machine only ever reads."""

    path: Path


class CloudBase(Protocol):
    """A base image a cloud backend resolved; its pin is recorded in build.json."""

    def pin(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class DiskImage:
    """A stopped machine's disk, to be captured."""

    path: Path


@dataclass(frozen=True)
class CloudImage:
    """An image a cloud made of a stopped machine: what ami.json holds."""

    region: str
    image_id: str
    record: dict[str, Any]
    cloud: str = "ec2"

    @property
    def ref(self) -> str:
        """The build's result line (`baker build` prints it last): ec2:REGION:AMI-ID."""
        return f"{self.cloud}:{self.region}:{self.image_id}"


@dataclass(frozen=True)
class SshTarget:
    """Where the testinfra tests log in: the machine's endpoint, with its host key pinned."""

    endpoint: Endpoint
    keys: BuildKeys
    user: str = "root"


OnLine = Callable[[str], None]


class Guest(Protocol):
    """A root session on a running build machine."""

    def run(self, command: str, on_line: OnLine, timeout: float) -> tuple[int, list[str]]:
        """Run a shell command; stream each output line; return the exit code and last lines."""
        ...

    def upload(self, data: bytes, remote: str, mode: int) -> None: ...

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

    def record(self) -> dict[str, Any]:
        """What build.json records of the machine."""
        ...

    def destroy(self) -> None:
        """Stop at once and release everything; never raises; safe to call twice."""
        ...


class Backend(Protocol):
    kind: str
    starts_from: StartsFrom
    hands_back: HandsBack

    def key_config(self) -> dict[str, Any]:
        """What of the backend's settings can change the image (for the boot step's key)."""
        ...

    def resolve_base(self) -> CloudBase:
        """The cloud base image to start from (backends that start from "cloud")."""
        ...

    def start(
        self, base: BaseDisk | CloudBase, keys: BuildKeys, workdir: Path, label: BuildLabel
    ) -> Machine:
        """Start a machine; on failure, whatever was made for it is gone before the error."""
        ...

    def image_exists(self, image: CloudImage) -> bool:
        """Whether a cloud image from the step cache is still there to be reused."""
        ...


@dataclass(frozen=True)
class CloudBoot:
    """One boot of a cloud image, timed by the host's monotonic clock."""

    to_ssh_s: float  # from the launch request to the first SSH command
    running_to_ssh_s: float  # from the instance seen running to the first SSH command
    startup: str  # `systemd-analyze time` as the booted machine printed it
    machine: dict[str, Any]  # what it ran on (instance type, id)


@runtime_checkable
class BootsImages(Protocol):
    """A cloud backend that can launch what it made, once, to time its boot."""

    def boot_image(self, image: CloudImage, label: BuildLabel) -> CloudBoot:
        """Launch `image` with a throwaway login, time it to SSH, read its startup times and
        remove all of it again (on every path)."""
        ...

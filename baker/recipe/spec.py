"""The recipe's typed, frozen form: validated once, then read by every step (never the raw YAML)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StringConstraints,
    Tag,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from baker.errors import BuildError
from baker.recipe.safety import LeakCheck, Nightly, PerAccel, Scan, Secret, SecretName

Sha256 = Annotated[
    str, StringConstraints(pattern=r"^[0-9a-f]{64}$"), Field(description="lower-case hex sha256")
]
Name = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9._-]{0,62}$")]
Package = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9+.-]+(=[A-Za-z0-9.+~:-]+)?$")]
FileMode = Annotated[str, StringConstraints(pattern=r"^0?[0-7]{3,4}$")]
AbsPath = Annotated[str, StringConstraints(pattern=r"^/[^\x00]*$")]
VarValue = str | bool | int | float


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


HostKeyType = Literal["ed25519", "ecdsa", "rsa"]
RECIPE_PARENT = "recipe:"  # base.image: recipe:FILE, the image another recipe builds
MAX_BOOT_RUNS = 20  # measured boots of the published image, at most


def is_reference(image: str) -> bool:
    """Whether base.image names a registry image rather than a local directory or a recipe:
    its first component is a host as `docker pull` tells them (a dot or port, or localhost;
    a local directory whose first component holds a dot is written ./that.dir)."""
    if image.startswith(RECIPE_PARENT) or is_cloud_url(image):
        return False
    first, sep, _ = image.partition("/")
    if not sep or first in ("", ".", ".."):
        return False
    return "." in first or ":" in first or first == "localhost"


def is_cloud_url(image: str) -> bool:
    """Whether base.image is a vendor cloud image's URL (a local one: a file, not a directory)."""
    return image.startswith(("https://", "http://"))


# Ubuntu's releases, baked on Ubuntu's cloud images only (base.image).
UBUNTU_SUITES = ("jammy", "noble")

# What only a tree made from packages has: a child of a parent image takes the parent's.
FROM_PACKAGES = ("mirror", "kernel", "cloud_init", "ssh_host_keys")


class Base(_Model):
    """The starting disk: a Debian root filesystem from the mirror, made bootable."""

    # Debian 12 or 13; Ubuntu 22.04 or 24.04 for a build on Ubuntu's cloud images (baker
    # makes Debian trees only).
    suite: Literal["bookworm", "trixie", "jammy", "noble"] = "bookworm"
    arch: Literal["amd64"] = "amd64"
    packages: tuple[Package, ...] = ()
    # None: the Debian mirror the host's apt already uses.
    mirror: str | None = None
    disk_size_mib: int = Field(2048, ge=1024, le=1024 * 1024)
    # hybrid: one disk that boots under BIOS and under UEFI (Secure Boot included), as
    # Debian's cloud images do; bios or uefi: only that way.
    boot: Literal["hybrid", "bios", "uefi"] = "hybrid"
    # Instance initialization at launch (user, keys, hostname, user data) from the cloud's
    # or hypervisor's datasource; off: the systemd-credential login only.
    cloud_init: bool = True
    # cloud: Debian's cloud kernel (virtio, Xen, Hyper-V, VMware's pvscsi and VMXNET3, NVMe;
    # what clouds and most hypervisors give a VM). generic: Debian's full kernel, for
    # hardware the cloud kernel has no driver for (AHCI/SATA disks, e1000 NICs: VirtualBox,
    # VMware's SATA and e1000 defaults, bare metal).
    kernel: Literal["cloud", "generic"] = "cloud"
    # The host key types each machine makes at first boot: ed25519 and ECDSA in milliseconds;
    # add rsa for clients that know no other (a 3072-bit key costs seconds under emulation).
    ssh_host_keys: tuple[HostKeyType, ...] = ("ed25519", "ecdsa")
    # The published qcow2's clusters: zstd (the default: a third of the size, quick to read
    # at boot), zlib (what qemu-img before 5.1 and some other readers know), or none.
    compression: Literal["zstd", "zlib", "none"] = "zstd"
    # A parent: an image baker baked (a local artifact directory pinned by its image digest,
    # a registry reference pinned by its manifest digest, or `recipe:FILE`, the image another
    # recipe builds), trusted by the key that signed it (or $BAKER_TRUST_KEY's); or a vendor's
    # cloud image (a URL or a file), pinned by its file's sha256 alone. The suite and boot
    # written here must be the image's; what only a tree made from packages has (FROM_PACKAGES)
    # is not written.
    image: str | None = Field(None, min_length=1)
    sha256: Sha256 | None = None
    trust: str | None = Field(None, min_length=1)
    # A vendor image re-made in baker's layout (reproducible), or its disk as it is (not).
    capture: Literal["remake", "as-is"] = "remake"

    @model_validator(mode="after")
    def _parent(self) -> Base:
        if self.image is None:
            if self.sha256 is not None or self.trust is not None:
                raise PydanticCustomError("parent", "sha256 and trust pin a parent: give image")
            if self.suite in UBUNTU_SUITES:
                raise PydanticCustomError(
                    "parent",
                    "{suite} is Ubuntu's: baker bakes Ubuntu on Ubuntu's cloud images (give "
                    "image: its URL or file); it makes Debian trees only",
                    {"suite": self.suite},
                )
            return self
        if is_cloud_url(self.image) and self.trust is not None:
            raise PydanticCustomError("parent", "a cloud image has no signature: leave trust out")
        pinned_elsewhere = is_reference(self.image) or self.image.startswith(RECIPE_PARENT)
        if self.sha256 is None and not pinned_elsewhere:
            raise PydanticCustomError(
                "parent", "a parent image is pinned by its digest: give sha256 (its image digest)"
            )
        own = [f for f in FROM_PACKAGES if f in self.model_fields_set]
        if own:
            raise PydanticCustomError(
                "parent",
                "{field} comes from the parent image; leave it out (a provisioner installs more)",
                {"field": own[0]},
            )
        return self

    @field_validator("ssh_host_keys")
    @classmethod
    def _once_each(cls, kinds: tuple[str, ...]) -> tuple[str, ...]:
        if not kinds:
            raise PydanticCustomError("no_host_keys", "at least one key type, or sshd can't start")
        if len(set(kinds)) != len(kinds):
            raise PydanticCustomError("duplicate", "each key type once")
        return kinds


class LibvirtBackend(_Model):
    type: Literal["libvirt"] = "libvirt"
    uri: str = "qemu:///system"
    memory_mib: int = Field(1024, ge=256)
    cpus: int = Field(2, ge=1, le=64)
    accel: Literal["auto", "kvm", "tcg"] = "auto"
    ssh_timeout_s: float = Field(300, gt=0)


def _matching(pattern: str, words: str) -> AfterValidator:
    """A text check that explains itself in words (the EC2 fields' own hints, so they need
    no entry in recipe.PATTERN_HINTS)."""
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        if not compiled.fullmatch(value):
            raise PydanticCustomError("ec2_value", words)
        return value

    return AfterValidator(check)


AwsRegion = Annotated[
    str, _matching(r"[a-z]{2}(-[a-z]+)+-[0-9]+", "expected an AWS region like eu-west-1")
]
AmiId = Annotated[str, _matching(r"ami-[0-9a-f]{8,17}", "expected an AMI id like ami-0abc12345")]
SubnetId = Annotated[
    str, _matching(r"subnet-[0-9a-f]{8,17}", "expected a subnet id like subnet-0abc12345")
]
_CIDR = r"[0-9]{1,3}(\.[0-9]{1,3}){3}/[0-9]{1,2}"
Cidr = Annotated[str, _matching(_CIDR, "expected an IPv4 CIDR like 203.0.113.7/32")]
_OWNERS = "expected an AWS account id (12 digits), self, amazon or aws-marketplace"
AmiOwner = Annotated[str, _matching(r"[0-9]{12}|self|amazon|aws-marketplace", _OWNERS)]
InstanceType = Annotated[
    str, _matching(r"[a-z0-9-]+\.[a-z0-9]+", "expected an instance type like t3.micro")
]
LoginName = Annotated[str, _matching(r"[a-z_][a-z0-9_-]{0,31}", "expected a login name like admin")]


class AmiFilter(_Model):
    """A base AMI chosen by owner and name pattern; the newest match is used, and recorded."""

    owner: AmiOwner
    name: Annotated[str, StringConstraints(min_length=1, max_length=128)]


class Ec2Backend(_Model):
    """A throwaway EC2 instance started from a base AMI; the result is a new AMI."""

    type: Literal["ec2"]
    region: AwsRegion
    instance_type: InstanceType = "t3.micro"
    subnet: SubnetId | None = None  # None: the region's default VPC
    ami: AmiId | None = None
    ami_filter: AmiFilter | None = None
    # The build instance's root volume, and so the AMI's; None: the base AMI's own size.
    root_volume_gib: int | None = Field(None, ge=1, le=16384)
    ssh_user: LoginName = "admin"
    # Which of the instance's addresses to reach it on; ssh_host/ssh_port override both (a
    # bastion's forward, or a local stand-in for the instance in tests).
    ssh_interface: Literal["public_ip", "private_ip"] = "public_ip"
    ssh_host: str | None = None
    ssh_port: int = Field(22, ge=1, le=65535)
    # Who may reach port 22. None: the builder's own address, and nothing else.
    ssh_cidr: Cidr | None = None
    launch_timeout_s: float = Field(600, ge=0)
    ssh_timeout_s: float = Field(600, gt=0)
    # How long to wait for the instance to print its host key fingerprints on the console
    # before falling back to trust-on-first-use (recorded as such).
    host_key_wait_s: float = Field(120, ge=0)
    stop_timeout_s: float = Field(600, ge=0)
    image_timeout_s: float = Field(3600, ge=0)

    @model_validator(mode="after")
    def _one_base(self) -> Ec2Backend:
        if (self.ami is None) == (self.ami_filter is None):
            raise PydanticCustomError(
                "ec2_base", "give exactly one of ami (an id) or ami_filter ({owner, name})"
            )
        return self


def _backend_type(value: Any) -> str | None:
    if isinstance(value, dict):
        kind = value.get("type", "libvirt")
        return kind if isinstance(kind, str) else None
    return getattr(value, "type", None)


Backend = Annotated[
    Annotated[LibvirtBackend, Tag("libvirt")] | Annotated[Ec2Backend, Tag("ec2")],
    Discriminator(
        _backend_type,
        custom_error_type="backend_type",
        custom_error_message="type must be libvirt or ec2",
    ),
]


class _Step(_Model):
    name: Name | None = None
    timeout_s: float = Field(1800, gt=0)


class ShellFile(_Step):
    """A script file from the repository, pinned by its sha256."""

    shell: str
    sha256: Sha256
    env: dict[str, str] = {}
    secrets: tuple[SecretName, ...] = ()  # handed to it as environment variables

    @property
    def path(self) -> str:
        return self.shell


class ShellInline(_Step):
    """Shell text written in the recipe itself (pinned by the recipe's own digest)."""

    inline: str
    env: dict[str, str] = {}
    secrets: tuple[SecretName, ...] = ()


class FileUpload(_Step):
    file: str
    sha256: Sha256
    dest: AbsPath
    mode: FileMode = "0644"
    owner: Annotated[
        str, StringConstraints(pattern=r"^[a-z_][a-z0-9_-]*(:[a-z_][a-z0-9_-]*)?$")
    ] = "root:root"

    @property
    def path(self) -> str:
        return self.file


def _provisioner_kind(value: Any) -> str | None:
    if isinstance(value, dict):
        for kind in ("shell", "inline", "file"):
            if kind in value:
                return kind
    return None


Provisioner = Annotated[
    Annotated[ShellFile, Tag("shell")]
    | Annotated[ShellInline, Tag("inline")]
    | Annotated[FileUpload, Tag("file")],
    Discriminator(
        _provisioner_kind,
        custom_error_type="provisioner_kind",
        custom_error_message="a provisioner needs one of the keys shell, inline or file",
    ),
]


class TestFile(_Model):
    path: str
    sha256: Sha256


class Recipe(_Model):
    name: Name
    description: str = ""
    variables: dict[str, VarValue] = {}
    base: Base = Base()
    backend: Backend = LibvirtBackend()
    provisioners: tuple[Provisioner, ...] = ()
    tests: tuple[TestFile, ...] = ()
    boot_budget_s: Annotated[float, Field(gt=0)] | PerAccel | None = None
    boot_runs: int = Field(3, ge=1, le=MAX_BOOT_RUNS)
    nightly: Nightly = Nightly()
    secrets: dict[SecretName, Secret] = {}
    leak_check: LeakCheck = LeakCheck()
    scan: Scan | None = None


@dataclass(frozen=True)
class Spec:
    """Everything a build reads: the validated recipe plus what resolving it pinned."""

    recipe: Recipe
    source: Path  # the recipe file
    digest: str  # sha256 of the recipe file's bytes
    rendered_digest: str  # sha256 of the text after jinja2, what was validated
    variables: dict[str, VarValue] = field(default_factory=dict)
    # Every file the recipe references, as written in the recipe -> (absolute path, sha256).
    files: dict[str, tuple[Path, str]] = field(default_factory=dict)
    # The project: the directory every file the recipe names lies in (recipe.project_root).
    # Left out, the recipe's own directory.
    root: Path = Path()
    # Where the recipe writes each field: dotted path (base.packages, provisioners.1.shell)
    # -> 1-based line in the rendered recipe. Fields an alias (*name) brings have the lines
    # of the anchored text; fields left to their defaults have none.
    lines: dict[str, int] = field(default_factory=dict)
    # base.image and base.trust, resolved inside the project (not checked yet: the build
    # verifies the parent, baker.build.parent); or base.image's registry reference, checked
    # for form and a digest pin (host/repo@sha256:...).
    parent: Path | None = None
    trust: Path | None = None
    parent_ref: str | None = None
    parent_recipe: Path | None = None  # base.image: recipe:FILE, resolved inside the project
    cloud_image: str | None = None  # base.image: a vendor cloud image's URL, or its file

    def __post_init__(self) -> None:
        if self.root == Path():
            object.__setattr__(self, "root", self.source.parent)

    @property
    def name(self) -> str:
        return self.recipe.name

    def where(self, field: str) -> str:
        """`FILE:LINE` of a field (a dotted path, as in `lines`), or of the nearest parent the
        recipe writes when it does not write the field itself; just `FILE` if neither."""
        probe = field
        while probe:
            if probe in self.lines:
                return f"{self.source}:{self.lines[probe]}"
            probe = probe.rpartition(".")[0]
        return str(self.source)

    def read(self, path: str) -> bytes:
        """A pinned file's bytes, checked against the pin again at the moment of use."""
        target, pinned = self.files[path]
        try:
            data = target.read_bytes()
        except OSError as e:
            raise BuildError(
                f"{target} can no longer be read during the build: {e.strerror}."
            ) from None
        if hashlib.sha256(data).hexdigest() != pinned:
            raise BuildError(f"{target} changed during the build (it no longer matches its pin).")
        return data

    def step_name(self, index: int, step: ShellFile | ShellInline | FileUpload) -> str:
        if step.name:
            return step.name
        if isinstance(step, ShellInline):
            return f"{index + 1:02d}-inline"
        return f"{index + 1:02d}-{Path(step.path).stem}"

"""The artifact contract (DESIGN.md, artifact layout): the files of a published artifact
directory, the typed build record (build.json), SHA256SUMS, and the atomic publish.

Every writer and every reader of an artifact goes through here: file names are defined once,
build.json is parsed once into a BuildRecord, and a published directory appears whole or not
at all.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import shutil
import tempfile
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydantic
from pydantic import BaseModel, ConfigDict

from baker.errors import BuildError, InputError
from baker.hashing import sha256_file

# --- the files -------------------------------------------------------------------------------

IMAGE = "image.qcow2"
SUMS = "SHA256SUMS"
BUILD = "build.json"
BOOT = "boot.json"
JUNIT = "verify.junit.xml"
SBOM_CDX = "sbom.cdx.json"
SBOM_SPDX = "sbom.spdx.json"
VULNS = "vulns.cdx.json"  # the vulnerability report, when the build scanned
PROVENANCE = "provenance.json"
DSSE = "provenance.dsse.json"
SIGNATURE = f"{IMAGE}.sig"
AMI = "ami.json"  # an EC2 build's image, in place of a disk


def dump_json(value: Any) -> bytes:
    """The JSON bytes baker publishes: sorted keys, so equal content is equal bytes."""
    return (json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


# --- build.json --------------------------------------------------------------------------------


class _Part(BaseModel):
    # Readers are forward-compatible: fields a later baker adds are kept, not refused.
    model_config = ConfigDict(extra="allow", frozen=True)


class RecipeRef(_Part):
    name: str
    file: str
    digest: str
    rendered_digest: str | None = None
    # The project root the recipe's files were inside, relative to the recipe's directory
    # (".." for images/NAME.yaml in a repository): a rebuild elsewhere finds it again.
    root: str | None = None


class LockPin(_Part):
    file: str
    digest: str
    resolved: str


class Pins(_Part):
    lock: LockPin | None = None
    debs: dict[str, str] = {}  # package -> sha256 of its locked .deb
    files: dict[str, str] = {}  # the recipe's pinned files, as written -> sha256:<hex>
    base: dict[str, Any] | None = None  # what decided the root tree (suite, packages, ...)
    base_digest: str | None = None  # the base root tar's digest
    base_ami: dict[str, Any] | None = None  # an EC2 build's base image
    packages: dict[str, str] = {}  # installed package -> version


class StepRecord(_Part):
    key: str | None = None
    seconds: float | None = None
    # ran: it did its work; reused: its output came from the step cache; skipped: not
    # needed, because a later step's cached output was reused.
    status: str = "ran"
    cached: bool = False


class TestCounts(_Part):
    tests: int = 0
    failures: int = 0
    errors: int = 0
    skipped: int = 0
    failed: list[str] = []


class ImageRecord(_Part):
    file: str | None = None
    digest: str | None = None  # sha256:<hex> of the qcow2: the image digest
    raw_digest: str | None = None  # sha256:<hex> of the raw disk it holds
    size: int | None = None
    virtual_size: int | None = None
    format: str | None = None
    compression: str | None = None  # the qcow2's clusters: zstd, zlib or none
    boot: str = "bios"
    ami: dict[str, Any] | None = None
    # False for a vendor's disk taken as it is (base.capture: as-is), and why.
    reproducible: bool | None = None
    why_not_reproducible: str | None = None


class Ancestor(_Part):
    name: str
    digest: str  # its image digest


class ParentRecord(Ancestor):
    """The verified parent image a child was built on (base.image)."""

    provenance_digest: str  # sha256:<hex> of the parent's provenance.json
    source: str  # where it was read from, as the recipe named it
    signer: str  # the keyid of the trusted key its signature verified with
    # The parent's own ancestors, its parent first, up to the image built from packages.
    ancestors: list[Ancestor] = []


class BuildRecord(_Part):
    baker_version: str
    recipe: RecipeRef
    variables: dict[str, Any] = {}
    source_date_epoch: int | None = None
    pins: Pins = Pins()
    steps: dict[str, StepRecord] = {}
    timings_s: dict[str, float] = {}
    accel: str | None = None
    backend: dict[str, Any] = {}
    tests: TestCounts = TestCounts()
    image: ImageRecord = ImageRecord()
    boot_budget_s: float | dict[str, float] | None = None
    tools: dict[str, str] = {}
    ec2: dict[str, Any] | None = None  # an EC2 build machine: region, instance, host key
    # What was removed on the build machine itself before a cloud made its image of it.
    generalized: dict[str, Any] | None = None
    parent: ParentRecord | None = None  # a child's parent image (base.image)
    secrets: dict[str, str] = {}  # NAME -> where its value came from (never the value)
    scan: dict[str, Any] | None = None  # the vulnerability scan: snapshot, counts, gate
    # What the leak check let through: the recipe's allowlist, and the files it put in itself.
    leak_check: dict[str, Any] | None = None
    started: str | None = None
    finished: str | None = None

    def dump(self) -> bytes:
        return dump_json(self.model_dump(mode="json", exclude_none=True))


# --- boot.json ---------------------------------------------------------------------------------


class BootRun(_Part):
    """One measured boot. A cloud's runs also carry its own figures and ids (extra fields:
    running_to_ssh_s, instance_type, instance_id)."""

    time_to_ssh_s: float
    time_to_first_output_s: float | None = None
    kernel_s: float | None = None
    initrd_s: float | None = None
    userspace_s: float | None = None
    slowest_units: list[dict[str, Any]] | None = None  # the first boot of each firmware's


class Medians(_Part):
    runs: int
    time_to_ssh_s: float | None = None
    time_to_first_output_s: float | None = None
    kernel_s: float | None = None
    initrd_s: float | None = None
    userspace_s: float | None = None


class FirmwareBoots(Medians):
    within_budget: bool | None = None
    each_run: list[BootRun] = []


class BootRecord(Medians):
    """boot.json: the published image's measured boots, per firmware; the top-level figures
    are the first firmware's (the one the image is launched with most)."""

    image: str  # the digest the evidence names
    accel: str  # kvm, tcg, or a cloud (ec2)
    budget_s: float | None = None
    within_budget: bool | None = None
    each_run: list[BootRun] = []
    firmware: dict[str, FirmwareBoots] = {}
    method: str = ""

    def dump(self) -> bytes:
        return dump_json(self.model_dump(mode="json", exclude_none=True))


def read_record(directory: Path) -> BuildRecord:
    """The build record of an artifact directory; InputError naming the file if it is
    missing or not a baker build record."""
    path = directory / BUILD
    try:
        return BuildRecord.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        raise InputError(f"{directory}: no {BUILD} here; is this a baker artifact?") from None
    except OSError as e:
        raise InputError(f"{path}: cannot be read ({e.strerror}).") from None
    except pydantic.ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise InputError(
            f"{path}: not a baker build record ({where}: {first['msg'].lower()})."
        ) from None


def recorded_root(record: BuildRecord, recipe: Path) -> Path | None:
    """The project root a build recorded, found again beside `recipe` (where the recipe is
    now: a rebuild elsewhere, or the sources an imported bundle carried)."""
    return (recipe.parent / record.recipe.root).resolve() if record.recipe.root else None


def image_dir(directory: Path) -> Path:
    """`directory`, checked to be an artifact directory holding an image."""
    if not directory.is_dir():
        raise InputError(f"{directory}: not an artifact directory.")
    if not (directory / IMAGE).is_file():
        raise InputError(f"{directory}: no {IMAGE} here; is this a baker artifact directory?")
    return directory


# --- SHA256SUMS --------------------------------------------------------------------------------

_SUM_LINE = re.compile(r"([0-9a-f]{64}) [ *]([^/\s]+)")


def read_sums(directory: Path) -> dict[str, str]:
    """SHA256SUMS as name -> sha256 hex; a missing or malformed file is a failed check."""
    path = directory / SUMS
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise BuildError(f"{path} is missing; is {directory} a baker artifact?") from None
    except (OSError, UnicodeDecodeError) as e:
        raise BuildError(f"{path} cannot be read ({e}).") from None
    sums: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        m = _SUM_LINE.fullmatch(line)
        if not m:
            raise BuildError(f"{path}:{n}: not a sha256sum line.")
        sums[m.group(2)] = m.group(1)
    return sums


def render_sums(sums: dict[str, str]) -> str:
    """`sha256sum` text mode: sorted, two spaces, one line a file."""
    return "".join(f"{h}  {name}\n" for name, h in sorted(sums.items()))


def sha256sums(directory: Path, known: dict[str, str] | None = None) -> str:
    """SHA256SUMS for every file in `directory`; `known` gives hashes already computed while
    the files were written (a disk image is not read twice)."""
    known = known or {}
    sums = {
        f.name: known.get(f.name) or sha256_file(f)
        for f in directory.iterdir()
        if f.is_file() and f.name != SUMS
    }
    return render_sums(sums)


def write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        tmp.chmod(0o644)
        tmp.rename(path)
    finally:
        tmp.unlink(missing_ok=True)


# --- publish -----------------------------------------------------------------------------------

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux renameat2); False where the kernel or libc lacks it."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except AttributeError:
        return False
    rc = fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    return bool(rc == 0)


def check_out_dir(out: Path, option: str = "--out") -> None:
    """Refuse an output directory that cannot hold artifacts, before any work is done;
    `option` is the flag that named it."""
    for p in (out, *out.parents):
        if p.exists():
            if not p.is_dir():
                raise InputError(f"{option} {out}: {p} is not a directory.")
            if not os.access(p, os.W_OK | os.X_OK):
                raise InputError(f"{option} {out}: {p} is not writable.")
            return


def publish(
    out: Path,
    name: str,
    files: dict[str, Path],
    known: dict[str, str] | None = None,
    copy: Collection[str] = (),
) -> Path:
    """Move `files` (artifact name -> current path) into `out/name`, with SHA256SUMS; those
    named in `copy` are copied instead (the step cache keeps its own). `known` holds sha256
    hex digests already computed for some of them.

    They are gathered in a hidden staging directory beside the target, then swapped in by a
    rename: a reader sees the old artifact or the new one, never a mix or a partial one."""
    made = _make_dirs(out)
    final = out / name
    staging: Path | None = None
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".partial", dir=out))
        for artifact_name, src in files.items():
            if artifact_name in copy:
                shutil.copyfile(src, staging / artifact_name)
            else:
                shutil.move(src, staging / artifact_name)
        (staging / SUMS).write_text(sha256sums(staging, known))
        for f in staging.iterdir():
            f.chmod(0o644)
            with f.open("rb") as fh:
                os.fsync(fh.fileno())
        staging.chmod(0o755)
        if final.exists() and _exchange(staging, final):
            shutil.rmtree(staging)  # it now holds the previous artifact
        else:
            if final.exists():
                shutil.rmtree(final)
            staging.rename(final)
    except BaseException:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        _remove_dirs(made)  # a failed publish leaves no empty out/ behind either
        raise
    return final


def _make_dirs(path: Path) -> list[Path]:
    """`path` and its missing parents, made; returns those it made, innermost first."""
    missing = [d for d in (path, *path.parents) if not d.exists()]
    path.mkdir(parents=True, exist_ok=True)
    return missing


def _remove_dirs(made: list[Path]) -> None:
    for d in made:
        try:
            d.rmdir()
        except OSError:
            return  # not empty: someone else put something there meanwhile


# A child's parent carried beside it by an imported bundle (ARTIFACT/parent/NAME, and the key
# that verifies it, ARTIFACT/parent/trust.pub).
CARRIED = "parent"
CARRIED_KEY = "trust.pub"


@dataclass(frozen=True)
class Carried:
    """A parent carried with its child: built on instead of where base.image names it, and
    verified with the key carried with it (which an import checked is the signer the child's
    signed provenance names)."""

    artifact: Path
    key: Path


def carried_in(artifact: Path, record: BuildRecord) -> Carried | None:
    """The parent an imported bundle carried into `artifact`, if it did."""
    if record.parent is None:
        return None
    found = artifact / CARRIED / record.parent.name
    key = artifact / CARRIED / CARRIED_KEY
    return Carried(found, key) if (found / IMAGE).is_file() and key.is_file() else None

"""`baker convert`: an artifact's qcow2 in every hypervisor's format, the same bytes every time.

qemu-img writes random or time-based fields into some formats. Each is rewritten in place after
the conversion, derived from the image digest, and any checksum the format keeps is fixed: see
baker.formats.vmdk, .vhdx and .vhd for each format's fields. raw and the qcow2 itself carry no
such fields. An OVA (baker.formats.ova) embeds the fixed stream-optimized vmdk.

This module is the command: which formats, which are already there, the conversions in order,
and the artifact's SHA256SUMS rewritten to list them.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from baker.artifact import (
    BUILD,
    IMAGE,
    SUMS,
    BuildRecord,
    image_dir,
    read_record,
    read_sums,
    recorded_root,
    render_sums,
    write_atomically,
)
from baker.errors import BakerError, BuildError, InputError
from baker.formats.ova import Hardware, check_ova, write_ova
from baker.formats.qemu import DISK_FORMATS, qemu_convert, same_content, virtual_size
from baker.formats.vhd import fix_vhd
from baker.formats.vhdx import fix_vhdx
from baker.formats.vmdk import fix_vmdk
from baker.hashing import sha256_file
from baker.progress import Meter, Reporter

FORMATS = ("raw", "qcow2", "vmdk", "vhdx", "vhd", "ova")
FILES = {fmt: f"image.{fmt}" for fmt in FORMATS}


@dataclass(frozen=True)
class Converted:
    name: str
    sha256: str
    size: int
    made: bool  # False: it was there already, listed in SHA256SUMS


@dataclass(frozen=True)
class Record:
    """An artifact's build record with what converting and exporting need checked present:
    BuildRecord leaves them optional, since an EC2 build has no disk image."""

    build: BuildRecord
    digest: str  # sha256:<hex> of image.qcow2
    name: str  # the recipe's
    source_date_epoch: int


def parse_formats(values: Iterable[str]) -> tuple[str, ...]:
    """`--format vmdk,ova --format raw`: known names, each once, in a fixed order."""
    asked = {v.strip().lower() for value in values for v in value.split(",") if v.strip()}
    if unknown := sorted(asked - set(FORMATS)):
        raise InputError(f"--format {','.join(unknown)}: expected any of {', '.join(FORMATS)}.")
    return tuple(f for f in FORMATS if f in asked)


def image_record(artifact: Path) -> Record:
    """The build record of an artifact directory holding a qcow2; InputError if either is
    missing or the record lacks the image digest or the source date."""
    build = read_record(image_dir(artifact))
    digest, epoch = build.image.digest, build.source_date_epoch
    if digest is None or epoch is None:
        where = "image.digest" if digest is None else "source_date_epoch"
        raise InputError(f"{artifact}/{BUILD}: not a baker build record ({where}: field required).")
    return Record(build, digest, build.recipe.name, epoch)


def hardware(record: BuildRecord) -> Hardware:
    """CPUs and memory for the OVF: the build record's if it has them, else the recipe's
    backend when the recipe is still the one built, else the recipe defaults; EFI firmware
    for an image that boots only under UEFI."""
    from baker import recipe
    from baker.recipe.spec import LibvirtBackend

    efi = record.image.boot == "uefi"
    recorded = record.backend
    if {"cpus", "memory_mib"} <= set(recorded):
        return Hardware(int(recorded["cpus"]), int(recorded["memory_mib"]), "build.json", efi)
    path = Path(record.recipe.file)
    variables = {
        k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in record.variables.items()
    }
    with contextlib.suppress(BakerError, OSError):
        if path.is_file() and f"sha256:{sha256_file(path)}" == record.recipe.digest:
            backend = recipe.load(path, variables, recorded_root(record, path)).recipe.backend
            cpus, memory = getattr(backend, "cpus", None), getattr(backend, "memory_mib", None)
            if isinstance(cpus, int) and isinstance(memory, int):  # a cloud backend has neither
                return Hardware(cpus, memory, str(path), efi)
    b = LibvirtBackend()
    return Hardware(b.cpus, b.memory_mib, "recipe defaults (the recipe is not at hand)", efi)


def convert(artifact: Path, formats: Sequence[str], reporter: Reporter) -> list[Converted]:
    """Write the asked formats into `artifact` and list them in its SHA256SUMS (rewritten
    atomically). A format already there and listed is kept as it is."""
    formats = parse_formats(formats)
    record = image_record(artifact)
    sums = read_sums(artifact)
    if sums.get(IMAGE) != record.digest.removeprefix("sha256:"):
        raise BuildError(f"{artifact}/{SUMS} does not list {IMAGE} with the digest in build.json.")
    todo = [f for f in formats if f != "qcow2" and not (FILES[f] in sums and _present(artifact, f))]
    results = {f: _existing(artifact, f, sums) for f in formats if f not in todo}
    if not todo:
        return [results[f] for f in formats]
    try:
        with tempfile.TemporaryDirectory(prefix=".convert-", dir=artifact) as tmp:
            made = _convert_all(artifact, Path(tmp), todo, record, sums, reporter)
            for fmt, path in made.items():
                size = path.stat().st_size
                path.rename(artifact / FILES[fmt])
                results[fmt] = Converted(FILES[fmt], sums[FILES[fmt]], size, True)
            write_atomically(artifact / SUMS, render_sums(sums).encode())
    except OSError as e:
        raise BuildError(f"cannot convert in {artifact}: {e.strerror or e}.") from None
    return [results[f] for f in formats]


def _present(artifact: Path, fmt: str) -> bool:
    return (artifact / FILES[fmt]).is_file()


def _existing(artifact: Path, fmt: str, sums: dict[str, str]) -> Converted:
    name = FILES[fmt]
    return Converted(name, sums[name], (artifact / name).stat().st_size, False)


def _convert_all(
    artifact: Path,
    tmp: Path,
    todo: list[str],
    record: Record,
    sums: dict[str, str],
    reporter: Reporter,
) -> dict[str, Path]:
    """Each format into `tmp`, fixed up and hashed; `sums` gains their lines."""
    qcow2 = artifact / IMAGE
    with Meter(reporter, f"check {IMAGE} against build.json", 0):
        if f"sha256:{sha256_file(qcow2)}" != record.digest:
            raise BuildError(f"{qcow2} does not match its digest in build.json; run baker verify.")
    made: dict[str, Path] = {}
    for fmt in [f for f in todo if f != "ova"]:
        out = tmp / FILES[fmt]
        qemu_convert(qcow2, out, fmt, reporter, f"convert {FILES[fmt]}")
        _fix(fmt, out, record.digest, record.source_date_epoch)
        out.chmod(0o644)
        sums[out.name] = sha256_file(out)
        made[fmt] = out
    if "ova" in todo:
        vmdk, vmdk_sha = _vmdk_for_ova(artifact, tmp, made, sums, record, reporter)
        hw = hardware(record.build)
        reporter.info(f"OVA hardware: {hw.cpus} CPUs, {hw.memory_mib} MiB (from {hw.source})")
        ova = tmp / FILES["ova"]
        with Meter(reporter, f"write {ova.name}", vmdk.stat().st_size) as meter:
            write_ova(
                ova,
                record.name,
                vmdk,
                vmdk_sha,
                virtual_size(qcow2),
                hw,
                record.source_date_epoch,
                meter,
            )
        ova.chmod(0o644)
        sums[ova.name] = sha256_file(ova)
        made["ova"] = ova
    return made


def _vmdk_for_ova(
    artifact: Path,
    tmp: Path,
    made: dict[str, Path],
    sums: dict[str, str],
    record: Record,
    reporter: Reporter,
) -> tuple[Path, str]:
    """The vmdk the OVA embeds, with its sha256: the one just made, the artifact's own (its
    listed hash is checked again as the OVA is written), or one made for the OVA alone."""
    name = FILES["vmdk"]
    if "vmdk" in made:
        return made["vmdk"], sums[name]
    if name in sums and (artifact / name).is_file():
        return artifact / name, sums[name]
    # Only the OVA was asked for: its disk stays out of the artifact.
    vmdk = tmp / "for-ova" / name
    vmdk.parent.mkdir()
    qemu_convert(artifact / IMAGE, vmdk, "vmdk", reporter, f"convert {name} (for the OVA)")
    _fix("vmdk", vmdk, record.digest, record.source_date_epoch)
    return vmdk, sha256_file(vmdk)


def _fix(fmt: str, path: Path, digest: str, source_date_epoch: int) -> None:
    if fmt == "vmdk":
        fix_vmdk(path, digest, FILES["vmdk"])
    elif fmt == "vhdx":
        fix_vhdx(path, digest)
    elif fmt == "vhd":
        fix_vhd(path, digest, source_date_epoch)


def check_converted(artifact: Path, reporter: Reporter | None = None) -> list[str]:
    """Every converted disk in `artifact` compared with its qcow2 (and an OVA checked whole):
    SHA256SUMS is not signed, so this is what ties them to the signed image."""
    qcow2 = artifact / IMAGE
    lines = []
    for fmt in FORMATS:
        path = artifact / FILES[fmt]
        if fmt == "qcow2" or not path.is_file():
            continue
        if fmt == "ova":
            lines.append(f"{path.name}: {check_ova(path, qcow2)}")
        elif same_content(path, DISK_FORMATS[fmt], qcow2, "qcow2"):
            lines.append(f"{path.name}: same content as {IMAGE}")
        else:
            raise BuildError(f"{path.name} does not hold the same disk as {IMAGE}.")
        if reporter:
            reporter.info(lines[-1])
    return lines

"""`baker convert`: an artifact's qcow2 in every hypervisor's format, the same bytes every time.

qemu-img writes random or time-based fields into some formats. Each is rewritten in place after
the conversion, derived from the image digest, and any checksum the format keeps is fixed:

- vmdk (stream-optimized): the descriptor's CID is random (and printed without leading zeros,
  so its length varies) and its extent line names the output file; both are rewritten and the
  descriptor re-padded inside its fixed area. The format has no checksum over it.
- vhdx: each header's sequence number (random start), FileWriteGuid and DataWriteGuid, and the
  Virtual Disk ID (Page 83) metadata item are random; each header carries a CRC-32C. The log
  region keeps stale entries of qemu's own BAT updates, each with a random LogGuid and a
  CRC-32C over it; with the header's LogGuid zero the spec says the log is empty and must not
  be replayed, so the region is zeroed as in a freshly created file.
- vhd (fixed): the footer's timestamp (now the build's source date) and UUID, and the footer's
  one's-complement checksum.
- raw and the qcow2 itself carry no such fields.

An OVA is a ustar tar (as OVF 1.0 asks) of an OVF 1.0 descriptor, its manifest (.mf, SHA256
lines) and the stream-optimized vmdk, in that order, with fixed owners, modes and times.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import struct
import subprocess
import tarfile
import tempfile
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from xml.sax.saxutils import escape, quoteattr

from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from baker.edge import tools
from baker.errors import BakerError, BuildError, InputError
from baker.hashing import sha256_file
from baker.progress import Reporter

IMAGE = "image.qcow2"
SUMS = "SHA256SUMS"
FORMATS = ("raw", "qcow2", "vmdk", "vhdx", "vhd", "ova")
FILES = {fmt: f"image.{fmt}" for fmt in FORMATS}
DISK_FORMATS = {"qcow2": "qcow2", "raw": "raw", "vmdk": "vmdk", "vhdx": "vhdx", "vhd": "vpc"}
# Stream-optimized: what VMware and OVA importers expect. Fixed vhd: what Azure takes; force_size
# keeps the exact virtual size instead of rounding it to a CHS geometry.
_QEMU_OPTIONS = {
    "raw": [],
    "vmdk": ["-o", "subformat=streamOptimized"],
    "vhdx": [],
    "vhd": ["-o", "subformat=fixed,force_size=on"],
}
_CHUNK = 1 << 20
SECTOR = 512


# --- progress --------------------------------------------------------------------------------


class Meter:
    """A byte bar on a terminal; plain start and end lines otherwise (CI logs). Reporter.step
    holds a live display of its own, and rich allows one at a time, so this stands alone."""

    def __init__(self, reporter: Reporter, what: str, total: int, percent: bool = False) -> None:
        self.reporter = reporter
        self.what = what
        self.total = 100 if percent else total
        self.percent = percent
        self._progress: Progress | None = None
        self._task: Any = None
        self._started = 0.0

    def __enter__(self) -> Meter:
        self._started = time.monotonic()
        console = self.reporter.console
        if self.reporter.live:
            self._progress = Progress(*self._columns(), console=console, transient=True)
            self._progress.start()
            self._task = self._progress.add_task(self.what, total=self.total or None)
        else:
            console.print(f"baker: ==> {self.what}", markup=False, highlight=False)
        return self

    def _columns(self) -> list[ProgressColumn]:
        name = TextColumn("[bold]{task.description}")
        if self.percent:
            return [
                name,
                BarColumn(),
                TextColumn("{task.percentage:>3.0f}%"),
                TimeRemainingColumn(),
            ]
        if self.total:
            amount = [DownloadColumn(binary_units=True), TransferSpeedColumn()]
            return [name, BarColumn(), *amount, TimeRemainingColumn()]
        return [SpinnerColumn(), name, TimeElapsedColumn()]  # no size to measure against

    def advance(self, n: int) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, n)

    def update(self, completed: float) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=completed)

    def __exit__(self, exc_type: object, *_: object) -> None:
        if self._progress is not None:
            self._progress.stop()
        mark = "done" if exc_type is None else "FAILED"
        elapsed = time.monotonic() - self._started
        self.reporter.console.print(
            f"baker: {mark} {self.what} ({elapsed:.1f} s)", markup=False, highlight=False
        )


def human(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.2f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def rate(size: int, seconds: float) -> str:
    return f"{human(size / max(seconds, 1e-6))}/s"


# --- the artifact's SHA256SUMS ---------------------------------------------------------------

_SUM_LINE = re.compile(r"([0-9a-f]{64}) [ *]([^/\s]+)")


def read_sums(artifact: Path) -> dict[str, str]:
    """SHA256SUMS as name -> sha256 hex; a missing or malformed file is a failed check."""
    path = artifact / SUMS
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise BuildError(f"{path} is missing; is {artifact} a baker artifact?") from None
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
    # The format publish writes: sorted, two spaces (text mode), one line a file.
    return "".join(f"{h}  {name}\n" for name, h in sorted(sums.items()))


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


# --- identifiers derived from the image digest -----------------------------------------------


def derived(seed: str, label: str) -> bytes:
    return hashlib.sha256(f"baker:{seed}:{label}".encode()).digest()


def derived_guid(seed: str, label: str) -> uuid.UUID:
    return uuid.UUID(bytes=derived(seed, label)[:16], version=4)


class _GuidMap:
    """Replaces each distinct random GUID by one derived from the seed, in order of first
    appearance, so GUIDs equal in qemu's output stay equal and different ones stay different."""

    def __init__(self, seed: str) -> None:
        self.seed = seed
        self.seen: dict[bytes, bytes] = {}

    def __call__(self, raw: bytes) -> bytes:
        if raw == bytes(16):
            return raw  # zero means "none" in vhdx
        if raw not in self.seen:
            self.seen[raw] = derived_guid(self.seed, f"vhdx-guid-{len(self.seen)}").bytes_le
        return self.seen[raw]


# --- CRC-32C (Castagnoli), what vhdx checksums use ---------------------------------------------
# Table-driven, a few lines: vhdx only checksums 4 KiB headers here, so speed does not matter and
# a compiled dependency would buy nothing.


def _crc32c_table() -> tuple[int, ...]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return tuple(table)


_CRC32C = _crc32c_table()


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for b in data:
        crc = _CRC32C[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


# --- vmdk ------------------------------------------------------------------------------------


def fix_vmdk(path: Path, seed: str, name: str) -> None:
    """Derive the descriptor's CID from `seed` and name the extent `name`."""
    with path.open("r+b") as f:
        header = f.read(SECTOR)
        if header[:4] != b"KDMV":
            raise BuildError(f"{path.name}: not a vmdk sparse extent.")
        desc_offset, desc_size = struct.unpack_from("<QQ", header, 28)
        if not 0 < desc_size <= 2048:
            raise BuildError(f"{path.name}: unexpected vmdk descriptor size {desc_size}.")
        f.seek(desc_offset * SECTOR)
        area = f.read(desc_size * SECTOR)
        text = area.split(b"\0", 1)[0].decode("ascii")
        cid = int.from_bytes(derived(seed, "vmdk-cid")[:4], "big") & 0x7FFFFFFF or 1
        text, n_cid = re.subn(r"^CID=[0-9a-fA-F]+$", f"CID={cid:08x}", text, count=1, flags=re.M)
        text, n_ext = re.subn(
            r'^(RW \d+ SPARSE )"[^"\n]*"$', rf'\g<1>"{name}"', text, count=1, flags=re.M
        )
        if n_cid != 1 or n_ext != 1:
            raise BuildError(f"{path.name}: unexpected vmdk descriptor (no CID or extent line).")
        data = text.encode("ascii")
        if len(data) >= len(area):
            raise BuildError(f"{path.name}: the rewritten vmdk descriptor outgrows its area.")
        f.seek(desc_offset * SECTOR)
        f.write(data + bytes(len(area) - len(data)))


# --- vhdx (MS-VHDX 1.0) ------------------------------------------------------------------------

_VHDX_HEADERS = (64 << 10, 128 << 10)
_VHDX_HEADER_SIZE = 4096
_VHDX_REGION_TABLE = 192 << 10
_VHDX_METADATA_REGION = uuid.UUID("8B7CA206-4790-4B9A-B8FE-575F050F886E").bytes_le
_VHDX_PAGE83 = uuid.UUID("BECA12AB-B2E6-4523-93EF-C309E000C746").bytes_le
_VHDX_GUID_FIELDS = (16, 32)  # FileWriteGuid, DataWriteGuid
_VHDX_LOG_GUID = 48


def fix_vhdx(path: Path, seed: str) -> None:
    guids = _GuidMap(seed)
    with path.open("r+b") as f:
        if f.read(8) != b"vhdxfile":
            raise BuildError(f"{path.name}: not a vhdx file.")
        headers = [_read_at(f, off, _VHDX_HEADER_SIZE) for off in _VHDX_HEADERS]
        if any(h[:4] != b"head" for h in headers):
            raise BuildError(f"{path.name}: a vhdx header lacks its signature.")
        sequences = [struct.unpack_from("<Q", h, 8)[0] for h in headers]
        current = headers[sequences.index(max(sequences))]
        if current[_VHDX_LOG_GUID : _VHDX_LOG_GUID + 16] != bytes(16):
            # qemu-img flushes its log before it exits; a live log would need replaying first.
            raise BuildError(f"{path.name}: qemu-img left a vhdx log to replay.")
        log_length, log_offset = struct.unpack_from("<IQ", current, 68)
        # The headers keep their relative order (the newer one stays newer); the base is the
        # digest's, where qemu's is random.
        base = int.from_bytes(derived(seed, "vhdx-sequence")[:4], "big") + 1
        low = min(sequences)
        for offset, header, sequence in zip(_VHDX_HEADERS, headers, sequences, strict=True):
            struct.pack_into("<Q", header, 8, base + sequence - low)
            for field in _VHDX_GUID_FIELDS:
                header[field : field + 16] = guids(bytes(header[field : field + 16]))
            header[4:8] = bytes(4)
            struct.pack_into("<I", header, 4, crc32c(header))
            _write_at(f, offset, header)
        _zero(f, log_offset, log_length)
        page83 = _vhdx_page83_offset(f, path)
        _write_at(f, page83, guids(bytes(_read_at(f, page83, 16))))


def _vhdx_page83_offset(f: IO[bytes], path: Path) -> int:
    """File offset of the Virtual Disk ID metadata item, found through the region table."""
    table = _read_at(f, _VHDX_REGION_TABLE, 64 << 10)
    if table[:4] != b"regi":
        raise BuildError(f"{path.name}: the vhdx region table lacks its signature.")
    (count,) = struct.unpack_from("<I", table, 8)
    for i in range(min(count, 2047)):
        entry = table[16 + 32 * i : 48 + 32 * i]
        if entry[:16] == _VHDX_METADATA_REGION:
            (region,) = struct.unpack_from("<Q", entry, 16)
            break
    else:
        raise BuildError(f"{path.name}: the vhdx file has no metadata region.")
    meta = _read_at(f, region, 64 << 10)
    if meta[:8] != b"metadata":
        raise BuildError(f"{path.name}: the vhdx metadata table lacks its signature.")
    (entries,) = struct.unpack_from("<H", meta, 10)
    for i in range(min(entries, 2047)):
        entry = meta[32 + 32 * i : 64 + 32 * i]
        if entry[:16] == _VHDX_PAGE83:
            item, length = struct.unpack_from("<II", entry, 16)
            if length != 16:
                raise BuildError(f"{path.name}: unexpected vhdx Virtual Disk ID length {length}.")
            return region + item
    raise BuildError(f"{path.name}: the vhdx file has no Virtual Disk ID.")


def _read_at(f: IO[bytes], offset: int, size: int) -> bytearray:
    f.seek(offset)
    data = f.read(size)
    if len(data) != size:
        raise BuildError(f"unexpected end of file at offset {offset}.")
    return bytearray(data)


def _write_at(f: IO[bytes], offset: int, data: bytes | bytearray) -> None:
    f.seek(offset)
    f.write(data)


def _zero(f: IO[bytes], offset: int, length: int) -> None:
    f.seek(offset)
    zeros = bytes(min(length, _CHUNK))
    while length > 0:
        length -= f.write(zeros[: min(length, len(zeros))])


# --- vhd (fixed) -------------------------------------------------------------------------------

_VHD_EPOCH = 946684800  # 2000-01-01T00:00:00Z, where vhd timestamps count from
_VHD_FIXED = 2


def fix_vhd(path: Path, seed: str, source_date_epoch: int) -> None:
    with path.open("r+b") as f:
        f.seek(-SECTOR, os.SEEK_END)
        footer_at = f.tell()
        footer = bytearray(f.read(SECTOR))
        if footer[:8] != b"conectix":
            raise BuildError(f"{path.name}: no vhd footer.")
        if struct.unpack_from(">I", footer, 60)[0] != _VHD_FIXED:
            raise BuildError(f"{path.name}: not a fixed vhd.")
        struct.pack_into(">I", footer, 24, max(0, source_date_epoch - _VHD_EPOCH))
        footer[68:84] = derived_guid(seed, "vhd-uuid").bytes
        footer[64:68] = bytes(4)
        struct.pack_into(">I", footer, 64, ~sum(footer) & 0xFFFFFFFF)
        _write_at(f, footer_at, footer)


# --- qemu-img --------------------------------------------------------------------------------


def virtual_size(image: Path, fmt: str = "qcow2") -> int:
    info = json.loads(tools.run(["qemu-img", "info", "--output=json", "-f", fmt, image]))
    return int(info["virtual-size"])


def _qemu_convert(src: Path, dst: Path, fmt: str, reporter: Reporter, what: str) -> None:
    """qemu-img convert in order (no -W: the same input gives the same layout), its progress
    shown as a bar on a terminal."""
    argv = [tools.require("qemu-img"), "convert", "-p", "-f", "qcow2", "-O", DISK_FORMATS[fmt]]
    argv += [*_QEMU_OPTIONS[fmt], str(src), str(dst)]
    tail = b""
    with Meter(reporter, what, 0, percent=True) as meter:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            assert proc.stdout is not None
            while chunk := os.read(proc.stdout.fileno(), 4096):
                tail = (tail + chunk)[-4096:]
                if found := re.findall(rb"\((\d+\.\d+)/100%\)", chunk):
                    meter.update(float(found[-1]))
            code = proc.wait()
        finally:
            if proc.poll() is None:  # interrupted: the conversion must not outlive us
                proc.kill()
                proc.wait()
            if proc.stdout:
                proc.stdout.close()
    if code != 0:
        said = re.sub(rb"\s*\(\d+\.\d+/100%\)\s*", b" ", tail).decode(errors="replace").strip()
        raise BuildError(f"qemu-img convert to {fmt} failed (exit {code}): {said or 'no output'}")


def same_content(a: Path, fmt_a: str, b: Path | str, fmt_b: str) -> bool:
    """`qemu-img compare`: the two disks hold the same guest-visible bytes."""
    proc = subprocess.run(
        [tools.require("qemu-img"), "compare", "-q", "-f", fmt_a, "-F", fmt_b, str(a), str(b)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode not in (0, 1):
        raise BuildError(f"qemu-img compare {a.name} failed: {proc.stderr.strip()[-300:]}")
    return proc.returncode == 0


# --- OVF and OVA -------------------------------------------------------------------------------

OVF_NS = "http://schemas.dmtf.org/ovf/envelope/1"
RASD_NS = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"
VSSD_NS = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData"
VMDK_STREAM = "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"
_DEBIAN_64 = 96  # CIM_OperatingSystem.OsType "Debian 64-bit"
_OVA_MAX_USTAR = 8 << 30  # ustar's 11 octal digits of size


@dataclass(frozen=True)
class Hardware:
    cpus: int
    memory_mib: int
    source: str  # where the figures came from, for the user


def _rasd(fields: dict[str, str | int]) -> str:
    # CIM's schema lists RASD elements in alphabetical order, which strict parsers enforce.
    return "".join(
        f"        <rasd:{k}>{escape(str(v))}</rasd:{k}>\n" for k, v in sorted(fields.items())
    )


def ovf_descriptor(name: str, disk_file: str, disk_size: int, capacity: int, hw: Hardware) -> bytes:
    """An OVF 1.0 envelope: one disk (stream-optimized vmdk on an IDE controller, the bus every
    importer and the image's initrd handle), CPUs, memory and one NIC on a NAT network."""
    items = [
        {
            "AllocationUnits": "hertz * 10^6",
            "Description": "Number of virtual CPUs",
            "ElementName": f"{hw.cpus} virtual CPU(s)",
            "InstanceID": 1,
            "ResourceType": 3,
            "VirtualQuantity": hw.cpus,
        },
        {
            "AllocationUnits": "byte * 2^20",
            "Description": "Memory size",
            "ElementName": f"{hw.memory_mib} MB of memory",
            "InstanceID": 2,
            "ResourceType": 4,
            "VirtualQuantity": hw.memory_mib,
        },
        {
            "Address": 0,
            "Description": "IDE controller",
            "ElementName": "ideController0",
            "InstanceID": 3,
            "ResourceSubType": "PIIX4",
            "ResourceType": 5,
        },
        {
            "AddressOnParent": 0,
            "ElementName": "disk0",
            "HostResource": "ovf:/disk/vmdisk1",
            "InstanceID": 4,
            "Parent": 3,
            "ResourceType": 17,
        },
        {
            "AutomaticAllocation": "true",
            "Connection": "NAT",
            "ElementName": "ethernet0",
            "InstanceID": 5,
            "ResourceSubType": "E1000",
            "ResourceType": 10,
        },
    ]
    hardware = "".join(f"      <Item>\n{_rasd(item)}      </Item>\n" for item in items)
    text = f"""<?xml version="1.0" encoding="UTF-8"?>
<Envelope ovf:version="1.0" xml:lang="en-US" xmlns="{OVF_NS}" xmlns:ovf="{OVF_NS}"
    xmlns:rasd="{RASD_NS}" xmlns:vssd="{VSSD_NS}"
    xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <References>
    <File ovf:href={quoteattr(disk_file)} ovf:id="file1" ovf:size="{disk_size}"/>
  </References>
  <DiskSection>
    <Info>Virtual disk information</Info>
    <Disk ovf:capacity="{capacity}" ovf:capacityAllocationUnits="byte" ovf:diskId="vmdisk1"
        ovf:fileRef="file1" ovf:format="{VMDK_STREAM}"/>
  </DiskSection>
  <NetworkSection>
    <Info>The logical networks</Info>
    <Network ovf:name="NAT">
      <Description>The image configures every NIC by DHCP</Description>
    </Network>
  </NetworkSection>
  <VirtualSystem ovf:id={quoteattr(name)}>
    <Info>A golden image baked by baker</Info>
    <Name>{escape(name)}</Name>
    <OperatingSystemSection ovf:id="{_DEBIAN_64}">
      <Info>The guest operating system</Info>
      <Description>Debian GNU/Linux 64-bit</Description>
    </OperatingSystemSection>
    <VirtualHardwareSection>
      <Info>Virtual hardware requirements (BIOS boot)</Info>
      <System>
        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>
        <vssd:InstanceID>0</vssd:InstanceID>
        <vssd:VirtualSystemIdentifier>{escape(name)}</vssd:VirtualSystemIdentifier>
        <vssd:VirtualSystemType>vmx-07</vssd:VirtualSystemType>
      </System>
{hardware}    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
"""
    return text.encode()


def manifest(hashes: dict[str, str]) -> bytes:
    return "".join(f"SHA256({name})= {h}\n" for name, h in hashes.items()).encode()


def tar_info(name: str, size: int, mtime: int) -> tarfile.TarInfo:
    """A regular file's header with nothing of the machine that wrote it: numeric owner 0, no
    owner names, mode 0644, the given time."""
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = mtime
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    return info


class HashingReader:
    """Reads a file for tarfile while hashing it and advancing a meter: one pass per file."""

    def __init__(self, f: IO[bytes], on_chunk: Callable[[int], None] | None = None) -> None:
        self.f = f
        self.hash = hashlib.sha256()
        self.count = 0
        self.on_chunk = on_chunk

    def read(self, size: int = -1) -> bytes:
        data = self.f.read(size)
        self.hash.update(data)
        self.count += len(data)
        if self.on_chunk:
            self.on_chunk(len(data))
        return data


def write_ova(
    ova: Path,
    name: str,
    vmdk: Path,
    vmdk_sha256: str,
    capacity: int,
    hw: Hardware,
    mtime: int,
    meter: Meter | None = None,
) -> None:
    """The .ovf first, then the .mf, then the disk (OVF 1.0, section 5.3)."""
    size = vmdk.stat().st_size
    ovf = ovf_descriptor(name, vmdk.name, size, capacity, hw)
    mf = manifest({f"{name}.ovf": hashlib.sha256(ovf).hexdigest(), vmdk.name: vmdk_sha256})
    # ustar is what OVF names; a vmdk past its 8 GiB size field needs GNU's base-256 sizes.
    fmt = tarfile.USTAR_FORMAT if size < _OVA_MAX_USTAR else tarfile.GNU_FORMAT
    with (
        ova.open("wb") as out,
        tarfile.open(fileobj=out, mode="w", format=fmt, copybufsize=_CHUNK) as tar,
    ):
        for member, data in ((f"{name}.ovf", ovf), (f"{name}.mf", mf)):
            tar.addfile(tar_info(member, len(data), mtime), io.BytesIO(data))
        with vmdk.open("rb") as f:
            reader = HashingReader(f, meter.advance if meter else None)
            tar.addfile(tar_info(vmdk.name, size, mtime), reader)  # type: ignore[arg-type]
        if reader.hash.hexdigest() != vmdk_sha256:
            raise BuildError(f"{vmdk} does not match its sha256 ({vmdk_sha256}); run baker verify.")


def check_ova(ova: Path, qcow2: Path) -> str:
    """An OVA checked as an importer would, and against the image: member order, the manifest's
    hashes, the descriptor's references and capacity, and the disk equal to the qcow2."""
    try:
        with tarfile.open(ova, "r:") as tar:
            members = tar.getmembers()
            names = [m.name for m in members]
            if any(not m.isreg() or "/" in m.name or m.name in ("", ".", "..") for m in members):
                raise BuildError(f"{ova.name}: holds something other than plain files.")
            if len(names) < 3 or not names[0].endswith(".ovf") or not names[1].endswith(".mf"):
                raise BuildError(f"{ova.name}: the .ovf and .mf do not come first.")
            if len(set(names)) != len(names):
                raise BuildError(f"{ova.name}: a member name is repeated.")
            if members[0].size > 1 << 20 or members[1].size > 1 << 20:
                raise BuildError(f"{ova.name}: its descriptor or manifest is implausibly large.")
            ovf_bytes = _member_bytes(tar, members[0])
            listed = _parse_manifest(ova, _member_bytes(tar, members[1]))
            if set(listed) != set(names) - {names[1]}:
                raise BuildError(f"{ova.name}: the manifest does not list exactly its files.")
            for m in members:
                if m.name != names[1] and _member_sha256(tar, m) != listed[m.name]:
                    raise BuildError(f"{ova.name}: {m.name} does not match the manifest.")
            disk = _check_ovf(ova, ovf_bytes, {m.name: m for m in members}, qcow2)
    except (tarfile.TarError, OSError) as e:
        raise BuildError(f"{ova.name}: not a readable OVA ({e}).") from None
    backing = {"driver": "file", "filename": str(ova.resolve())}
    inner = {"driver": "raw", "offset": disk.offset_data, "size": disk.size, "file": backing}
    spec = "json:" + json.dumps({"driver": "vmdk", "file": inner})
    if not same_content(qcow2, "qcow2", spec, "vmdk"):
        raise BuildError(f"{ova.name}: its disk {disk.name} differs from {qcow2.name}.")
    return f"{len(names)} files match its manifest, {disk.name} equals {qcow2.name}"


def _member_bytes(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    f = tar.extractfile(member)
    assert f is not None
    return f.read()


def _member_sha256(tar: tarfile.TarFile, member: tarfile.TarInfo) -> str:
    f = tar.extractfile(member)
    assert f is not None
    h = hashlib.sha256()
    while chunk := f.read(_CHUNK):
        h.update(chunk)
    return h.hexdigest()


def _parse_manifest(ova: Path, data: bytes) -> dict[str, str]:
    listed: dict[str, str] = {}
    for line in data.decode(errors="replace").splitlines():
        m = re.fullmatch(r"SHA256\((.+)\)= ([0-9a-f]{64})", line)
        if not m:
            raise BuildError(f"{ova.name}: a manifest line is not SHA256(file)= hex: {line[:80]!r}")
        listed[m.group(1)] = m.group(2)
    return listed


def _check_ovf(
    ova: Path, data: bytes, members: dict[str, tarfile.TarInfo], qcow2: Path
) -> tarfile.TarInfo:
    """The descriptor's file references and disk capacity; returns the disk's member."""
    ns = {"ovf": OVF_NS}
    try:
        root = ET.fromstring(data)
    except ET.ParseError as e:
        raise BuildError(f"{ova.name}: the OVF descriptor is not XML ({e}).") from None
    if root.tag != f"{{{OVF_NS}}}Envelope" or root.get(f"{{{OVF_NS}}}version") != "1.0":
        raise BuildError(f"{ova.name}: the descriptor is not an OVF 1.0 envelope.")
    files = {}
    for f in root.findall("ovf:References/ovf:File", ns):
        href, size = f.get(f"{{{OVF_NS}}}href"), f.get(f"{{{OVF_NS}}}size")
        if href not in members or str(members[href].size) != size:
            raise BuildError(f"{ova.name}: the descriptor references {href!r} wrongly.")
        files[f.get(f"{{{OVF_NS}}}id")] = members[href]
    disks = root.findall("ovf:DiskSection/ovf:Disk", ns)
    if len(disks) != 1 or disks[0].get(f"{{{OVF_NS}}}fileRef") not in files:
        raise BuildError(f"{ova.name}: the descriptor does not describe one disk file.")
    capacity = disks[0].get(f"{{{OVF_NS}}}capacity")
    if capacity != str(virtual_size(qcow2)):
        raise BuildError(f"{ova.name}: the disk capacity {capacity} is not {qcow2.name}'s.")
    return files[disks[0].get(f"{{{OVF_NS}}}fileRef")]


# --- the command -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Converted:
    name: str
    sha256: str
    size: int
    made: bool  # False: it was there already, listed in SHA256SUMS


def parse_formats(values: Iterable[str]) -> tuple[str, ...]:
    """`--format vmdk,ova --format raw`: known names, each once, in a fixed order."""
    asked = {v.strip().lower() for value in values for v in value.split(",") if v.strip()}
    if unknown := sorted(asked - set(FORMATS)):
        raise InputError(f"--format {','.join(unknown)}: expected any of {', '.join(FORMATS)}.")
    return tuple(f for f in FORMATS if f in asked)


def read_record(artifact: Path) -> dict[str, Any]:
    if not artifact.is_dir():
        raise InputError(f"{artifact}: not an artifact directory.")
    if not (artifact / IMAGE).is_file():
        raise InputError(f"{artifact}: no {IMAGE} here; is this a baker artifact directory?")
    try:
        record = json.loads((artifact / "build.json").read_bytes())
        record["image"]["digest"], record["recipe"]["name"], int(record["source_date_epoch"])
    except FileNotFoundError:
        raise InputError(f"{artifact}: no build.json; is this a baker artifact?") from None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InputError(f"{artifact}/build.json: not a baker build record ({e}).") from None
    return dict(record)


def hardware(record: dict[str, Any]) -> Hardware:
    """CPUs and memory for the OVF: the build record's if it has them, else the recipe's
    backend when the recipe is still the one built, else the recipe defaults."""
    from baker import recipe
    from baker.spec import LibvirtBackend

    recorded = record.get("backend")
    if isinstance(recorded, dict) and {"cpus", "memory_mib"} <= set(recorded):
        return Hardware(int(recorded["cpus"]), int(recorded["memory_mib"]), "build.json")
    path = Path(str(record.get("recipe", {}).get("file", "")))
    variables = {
        k: str(v).lower() if isinstance(v, bool) else str(v)
        for k, v in (record.get("variables") or {}).items()
    }
    with contextlib.suppress(BakerError, OSError):
        if path.is_file() and f"sha256:{sha256_file(path)}" == record["recipe"].get("digest"):
            backend = recipe.load(path, variables).recipe.backend
            cpus, memory = getattr(backend, "cpus", None), getattr(backend, "memory_mib", None)
            if isinstance(cpus, int) and isinstance(memory, int):  # a cloud backend has neither
                return Hardware(cpus, memory, str(path))
    b = LibvirtBackend()
    return Hardware(b.cpus, b.memory_mib, "recipe defaults (the recipe is not at hand)")


def convert(artifact: Path, formats: Sequence[str], reporter: Reporter) -> list[Converted]:
    """Write the asked formats into `artifact` and list them in its SHA256SUMS (rewritten
    atomically). A format already there and listed is kept as it is."""
    formats = parse_formats(formats)
    record = read_record(artifact)
    sums = read_sums(artifact)
    digest = record["image"]["digest"]
    if sums.get(IMAGE) != digest.removeprefix("sha256:"):
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
    record: dict[str, Any],
    sums: dict[str, str],
    reporter: Reporter,
) -> dict[str, Path]:
    """Each format into `tmp`, fixed up and hashed; `sums` gains their lines."""
    qcow2 = artifact / IMAGE
    digest = record["image"]["digest"]
    with Meter(reporter, f"check {IMAGE} against build.json", 0):
        if f"sha256:{sha256_file(qcow2)}" != digest:
            raise BuildError(f"{qcow2} does not match its digest in build.json; run baker verify.")
    made: dict[str, Path] = {}
    for fmt in [f for f in todo if f != "ova"]:
        out = tmp / FILES[fmt]
        _qemu_convert(qcow2, out, fmt, reporter, f"convert {FILES[fmt]}")
        _fix(fmt, out, digest, int(record["source_date_epoch"]))
        out.chmod(0o644)
        sums[out.name] = sha256_file(out)
        made[fmt] = out
    if "ova" in todo:
        vmdk, vmdk_sha = _vmdk_for_ova(artifact, tmp, made, sums, record, reporter)
        hw = hardware(record)
        reporter.info(f"OVA hardware: {hw.cpus} CPUs, {hw.memory_mib} MiB (from {hw.source})")
        ova = tmp / FILES["ova"]
        with Meter(reporter, f"write {ova.name}", vmdk.stat().st_size) as meter:
            write_ova(
                ova,
                record["recipe"]["name"],
                vmdk,
                vmdk_sha,
                virtual_size(qcow2),
                hw,
                int(record["source_date_epoch"]),
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
    record: dict[str, Any],
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
    _qemu_convert(artifact / IMAGE, vmdk, "vmdk", reporter, f"convert {name} (for the OVA)")
    _fix("vmdk", vmdk, record["image"]["digest"], int(record["source_date_epoch"]))
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

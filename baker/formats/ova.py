"""The OVA: a ustar tar (as OVF 1.0 asks) of an OVF 1.0 descriptor, its manifest (.mf, SHA256
lines) and the stream-optimized vmdk, in that order, with fixed owners, modes and times; and
the check of one, made as an importer would."""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from baker.errors import BuildError
from baker.formats.patching import CHUNK
from baker.formats.qemu import same_content, virtual_size
from baker.formats.tario import HashingReader, tar_info
from baker.progress import Meter

OVF_NS = "http://schemas.dmtf.org/ovf/envelope/1"
RASD_NS = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"
VSSD_NS = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData"
VMW_NS = "http://www.vmware.com/schema/ovf"
VMDK_STREAM = "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"
_DEBIAN_64 = 96  # CIM_OperatingSystem.OsType "Debian 64-bit"
_OVA_MAX_USTAR = 8 << 30  # ustar's 11 octal digits of size


@dataclass(frozen=True)
class Hardware:
    cpus: int
    memory_mib: int
    source: str  # where the figures came from, for the user
    efi: bool = False  # the image boots under UEFI only (base.boot: uefi)


def _rasd(fields: dict[str, str | int]) -> str:
    # CIM's schema lists RASD elements in alphabetical order, which strict parsers enforce.
    return "".join(
        f"        <rasd:{k}>{escape(str(v))}</rasd:{k}>\n" for k, v in sorted(fields.items())
    )


def ovf_descriptor(name: str, disk_file: str, disk_size: int, capacity: int, hw: Hardware) -> bytes:
    """An OVF 1.0 envelope: one disk (stream-optimized vmdk on an IDE controller, the bus every
    importer and the image's initrd handle), CPUs, memory and one VMXNET3 NIC on a NAT network
    (Debian's cloud kernel, the image's, drives VMXNET3 but not the E1000); VMware's EFI
    firmware for an image that boots under UEFI only."""
    items: list[dict[str, str | int]] = [
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
            "ResourceSubType": "VmxNet3",
            "ResourceType": 10,
        },
    ]
    hardware = "".join(f"      <Item>\n{_rasd(item)}      </Item>\n" for item in items)
    firmware = (
        '      <vmw:Config ovf:required="false" vmw:key="firmware" vmw:value="efi"/>\n'
        if hw.efi
        else ""
    )
    text = f"""<?xml version="1.0" encoding="UTF-8"?>
<Envelope ovf:version="1.0" xml:lang="en-US" xmlns="{OVF_NS}" xmlns:ovf="{OVF_NS}"
    xmlns:rasd="{RASD_NS}" xmlns:vssd="{VSSD_NS}" xmlns:vmw="{VMW_NS}"
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
      <Info>Virtual hardware requirements ({"UEFI" if hw.efi else "BIOS"} boot)</Info>
      <System>
        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>
        <vssd:InstanceID>0</vssd:InstanceID>
        <vssd:VirtualSystemIdentifier>{escape(name)}</vssd:VirtualSystemIdentifier>
        <vssd:VirtualSystemType>vmx-07</vssd:VirtualSystemType>
      </System>
{hardware}{firmware}    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
"""
    return text.encode()


def manifest(hashes: dict[str, str]) -> bytes:
    return "".join(f"SHA256({name})= {h}\n" for name, h in hashes.items()).encode()


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
        # typeshed's tarfile.open lacks copybufsize.
        tarfile.open(  # type: ignore[call-overload]
            fileobj=out, mode="w", format=fmt, copybufsize=CHUNK
        ) as tar,
    ):
        for member, data in ((f"{name}.ovf", ovf), (f"{name}.mf", mf)):
            tar.addfile(tar_info(member, len(data), mtime), io.BytesIO(data))
        with vmdk.open("rb") as f:
            reader = HashingReader(f, meter.advance if meter else None)
            tar.addfile(tar_info(vmdk.name, size, mtime), reader)
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
    while chunk := f.read(CHUNK):
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

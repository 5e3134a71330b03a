"""baker.formats.convert: a small real image in every format, bit for bit the same each time, equal
to its qcow2. The image and artifacts come from support.artifacts, shared with test_bundle.py."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import struct
import subprocess
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest
from lxml import etree
from rich.console import Console
from support.artifacts import (
    BAKER,
    NAME,
    SDE,
    SIZE_MIB,
    image_fixture,
    keypair_fixture,
    make_artifact,
    make_project,
    quiet,
)
from support.tamper import flip_byte

from baker.cache import Cache
from baker.errors import BuildError, InputError
from baker.evidence import verify as check
from baker.formats import convert, patching, qemu
from baker.formats import ova as ovf
from baker.hashing import sha256_file
from baker.progress import Reporter

__all__ = ["image_fixture", "keypair_fixture"]  # fixtures

DISKS = ("raw", "vmdk", "vhdx", "vhd")
DISK_NAMES = tuple(f"  image.{f}" for f in convert.FORMATS)


def _run(*argv: str | Path, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, **kwargs)


@pytest.fixture
def artifact(tmp_path: Path, image: Path, keypair: tuple[Path, Path]) -> Path:
    return make_artifact(tmp_path / "art", image, keypair[0])


@pytest.fixture(scope="module")
def converted(
    tmp_path_factory: pytest.TempPathFactory, image: Path, keypair: tuple[Path, Path]
) -> Path:
    """One artifact converted to every format, read by several tests."""
    art = make_artifact(tmp_path_factory.mktemp("converted") / "art", image, keypair[0])
    convert.convert(art, convert.FORMATS, quiet())
    return art


def _qemu_img(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return _run("qemu-img", *args)


# --- formats and checksums -------------------------------------------------------------------


def test_crc32c_matches_the_published_test_vectors() -> None:
    assert patching.crc32c(b"123456789") == 0xE3069283
    assert patching.crc32c(bytes(32)) == 0x8A9136AA  # RFC 3720, B.4
    assert patching.crc32c(b"\xff" * 32) == 0x62A8AB43
    assert patching.crc32c(b"") == 0


def test_formats_parse_from_lists_and_repeats() -> None:
    assert convert.parse_formats(["ova,vmdk", "raw", "VMDK"]) == ("raw", "vmdk", "ova")
    with pytest.raises(InputError, match=r"--format iso: expected any of raw, qcow2"):
        convert.parse_formats(["vmdk,iso"])


def test_every_format_equals_the_qcow2_and_is_listed(converted: Path, keypair: Any) -> None:
    for fmt in DISKS:
        path = converted / f"image.{fmt}"
        driver = qemu.DISK_FORMATS[fmt]
        proc = _qemu_img("compare", "-f", driver, "-F", "qcow2", path, converted / "image.qcow2")
        assert proc.returncode == 0, (fmt, proc.stdout, proc.stderr)
        info = json.loads(_qemu_img("info", "--output=json", "-f", driver, path).stdout)
        assert info["virtual-size"] == SIZE_MIB << 20, fmt
    assert _run("sha256sum", "--strict", "-c", "SHA256SUMS", cwd=converted).returncode == 0
    listed = {line.split()[1] for line in (converted / "SHA256SUMS").read_text().splitlines()}
    assert {f"image.{f}" for f in convert.FORMATS} <= listed
    # `baker verify` still holds: every file listed, the signed image untouched.
    findings = check.verify(converted, keypair[1])
    assert all(f.ok for f in findings), [f.line() for f in findings]
    assert _run(BAKER, "verify", converted, "--pub", keypair[1]).returncode == 0
    assert not [p for p in converted.iterdir() if p.name.startswith(".")]


def test_converting_twice_gives_the_same_bytes(
    tmp_path: Path, image: Path, keypair: Any, converted: Path
) -> None:
    again = make_artifact(tmp_path / "again", image, keypair[0])
    time.sleep(1.1)  # vhd keeps a timestamp in seconds: a second later must not show
    convert.convert(again, convert.FORMATS, quiet())
    for fmt in convert.FORMATS:
        name = f"image.{fmt}"
        assert sha256_file(again / name) == sha256_file(converted / name), fmt
    # Their SHA256SUMS lines too (the rest differ: paths in build.json, ECDSA signatures).
    lines = [
        {ln for ln in (art / "SHA256SUMS").read_text().splitlines() if ln.endswith(DISK_NAMES)}
        for art in (again, converted)
    ]
    assert lines[0] == lines[1]


@pytest.mark.parametrize("fmt", ["vmdk", "vhdx", "vhd"])
def test_qemu_img_alone_is_not_deterministic(tmp_path: Path, image: Path, fmt: str) -> None:
    """What the fix-ups are for: without them two conversions differ (so the test above would
    catch a field left random)."""
    outs = []
    for i in range(2):
        out = tmp_path / f"{i}.{fmt}"
        argv = ["convert", "-f", "qcow2", "-O", qemu.DISK_FORMATS[fmt]]
        argv += [*qemu.QEMU_OPTIONS[fmt], str(image), str(out)]
        assert _qemu_img(*argv).returncode == 0
        outs.append(sha256_file(out))
        time.sleep(1.1)
    assert outs[0] != outs[1]


def test_random_fields_are_derived_from_the_digest(converted: Path) -> None:
    digest = json.loads((converted / "build.json").read_text())["image"]["digest"]
    # vmdk: the descriptor's CID, and the extent named as the published file.
    with (converted / "image.vmdk").open("rb") as f:
        head = f.read(64 << 10)
    offset, size = struct.unpack_from("<QQ", head, 28)
    descriptor = head[offset * 512 : (offset + size) * 512].split(b"\0")[0].decode()
    cid = int.from_bytes(patching.derived(digest, "vmdk-cid")[:4], "big") & 0x7FFFFFFF
    assert f"\nCID={cid:08x}\n" in descriptor
    assert 'SPARSE "image.vmdk"' in descriptor
    # vhd: the footer's time is the build's source date, its checksum holds.
    with (converted / "image.vhd").open("rb") as f:
        f.seek(-512, os.SEEK_END)
        footer = bytearray(f.read(512))
    assert struct.unpack_from(">I", footer, 24)[0] == SDE - 946684800
    assert footer[68:84] == patching.derived_guid(digest, "vhd-uuid").bytes
    stored = struct.unpack_from(">I", footer, 64)[0]
    footer[64:68] = bytes(4)
    assert stored == ~sum(footer) & 0xFFFFFFFF
    # vhdx: both headers' CRC-32C hold, the stale log is gone, qemu-img check agrees.
    with (converted / "image.vhdx").open("rb") as f:
        for offset in (64 << 10, 128 << 10):
            f.seek(offset)
            header = bytearray(f.read(4096))
            stored = struct.unpack_from("<I", header, 4)[0]
            header[4:8] = bytes(4)
            assert stored == patching.crc32c(header)
            log_length, log_offset = struct.unpack_from("<IQ", header, 68)
        f.seek(log_offset)
        assert not any(f.read(log_length))
    for fmt in ("vmdk", "vhdx"):
        proc = _qemu_img("check", "-f", fmt, converted / f"image.{fmt}")
        assert proc.returncode == 0, proc.stdout + proc.stderr


# --- OVA -------------------------------------------------------------------------------------


def test_ova_is_an_ovf_package_checked_against_its_manifest(converted: Path) -> None:
    ova = converted / "image.ova"
    with tarfile.open(ova) as tar:
        members = tar.getmembers()
        data = {m.name: tar.extractfile(m).read() for m in members}  # type: ignore[union-attr]
    assert [m.name for m in members] == [f"{NAME}.ovf", f"{NAME}.mf", "image.vmdk"]
    assert all((m.uid, m.gid, m.uname, m.gname, m.mode, m.mtime) == (0, 0, "", "", 0o644, SDE)
               for m in members)  # fmt: skip
    assert ova.read_bytes()[257:263] == b"ustar\x00"  # POSIX ustar, as OVF 1.0 asks
    assert data["image.vmdk"] == (converted / "image.vmdk").read_bytes()
    lines = data[f"{NAME}.mf"].decode().splitlines()
    manifest = dict(line.removeprefix("SHA256(").split(")= ") for line in lines)
    assert manifest == {
        n: hashlib.sha256(data[n]).hexdigest() for n in (f"{NAME}.ovf", "image.vmdk")
    }

    ns = {"ovf": ovf.OVF_NS, "rasd": ovf.RASD_NS}
    root = etree.fromstring(data[f"{NAME}.ovf"])
    assert root.get(f"{{{ovf.OVF_NS}}}version") == "1.0"
    (ref,) = root.findall("ovf:References/ovf:File", ns)
    assert ref.get(f"{{{ovf.OVF_NS}}}href") == "image.vmdk"
    assert ref.get(f"{{{ovf.OVF_NS}}}size") == str(len(data["image.vmdk"]))
    (disk_el,) = root.findall("ovf:DiskSection/ovf:Disk", ns)
    assert disk_el.get(f"{{{ovf.OVF_NS}}}capacity") == str(SIZE_MIB << 20)
    assert disk_el.get(f"{{{ovf.OVF_NS}}}fileRef") == ref.get(f"{{{ovf.OVF_NS}}}id")
    assert disk_el.get(f"{{{ovf.OVF_NS}}}format").endswith("#streamOptimized")
    items = {
        item.findtext("rasd:ResourceType", namespaces=ns): item
        for item in root.iterfind(".//ovf:VirtualHardwareSection/ovf:Item", ns)
    }
    # No recipe at hand for this artifact: the recipe defaults.
    assert items["3"].findtext("rasd:VirtualQuantity", namespaces=ns) == "2"
    assert items["4"].findtext("rasd:VirtualQuantity", namespaces=ns) == "1024"
    assert items["17"].findtext("rasd:HostResource", namespaces=ns) == "ovf:/disk/vmdisk1"
    for item in items.values():  # CIM's schema order: alphabetical
        tags = [etree.QName(child).localname for child in item]
        assert tags == sorted(tags)
    assert "equals image.qcow2" in ovf.check_ova(ova, converted / "image.qcow2")


def test_ova_hardware_comes_from_the_recipe(tmp_path: Path, image: Path) -> None:
    project = make_project(tmp_path / "project", Cache(tmp_path / "cache"))
    art = make_artifact(tmp_path / "art", image, project=project)
    convert.convert(art, ["ova"], quiet())
    assert not (art / "image.vmdk").exists()  # only asked for inside the OVA
    with tarfile.open(art / "image.ova") as tar:
        ovf = tar.extractfile(f"{NAME}.ovf").read().decode()  # type: ignore[union-attr]
    assert "<rasd:VirtualQuantity>3</rasd:VirtualQuantity>" in ovf
    assert "<rasd:VirtualQuantity>768</rasd:VirtualQuantity>" in ovf


def test_ova_check_catches_a_changed_disk(tmp_path: Path, converted: Path) -> None:
    ova = tmp_path / "image.ova"
    shutil.copyfile(converted / "image.ova", ova)
    with tarfile.open(ova) as tar:
        at = tar.getmember("image.vmdk").offset_data + 4096
    flip_byte(ova, at)
    with pytest.raises(BuildError, match=r"image\.vmdk does not match the manifest"):
        ovf.check_ova(ova, converted / "image.qcow2")


# --- the command -----------------------------------------------------------------------------


def test_converting_again_keeps_what_is_there(converted: Path) -> None:
    before = {p.name: p.stat().st_mtime_ns for p in converted.iterdir()}
    done = convert.convert(converted, ["vmdk", "qcow2", "ova"], quiet())
    assert [(c.name, c.made) for c in done] == [
        ("image.qcow2", False), ("image.vmdk", False), ("image.ova", False)
    ]  # fmt: skip
    assert {p.name: p.stat().st_mtime_ns for p in converted.iterdir()} == before


def test_a_changed_image_is_not_converted(artifact: Path) -> None:
    with (artifact / "image.qcow2").open("r+b") as f:
        f.seek(1 << 20)
        f.write(b"tampered")
    sums = (artifact / "SHA256SUMS").read_bytes()
    with pytest.raises(BuildError, match=r"does not match its digest in build\.json"):
        convert.convert(artifact, ["vmdk"], quiet())
    assert not (artifact / "image.vmdk").exists()
    assert (artifact / "SHA256SUMS").read_bytes() == sums
    assert not [p for p in artifact.iterdir() if p.name.startswith(".")]


def test_progress_on_a_terminal(artifact: Path) -> None:
    screen = io.StringIO()
    reporter = Reporter(Console(file=screen, force_terminal=True, width=100))
    convert.convert(artifact, ["vhd"], reporter)
    assert "convert image.vhd" in screen.getvalue()


def test_cli_convert(artifact: Path) -> None:
    proc = _run(BAKER, "convert", artifact, "--format", "vmdk", "--format", "vhdx,raw")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert [line.split()[0] for line in lines[:3]] == ["image.raw", "image.vmdk", "image.vhdx"]
    assert lines[-1].startswith(f"{artifact}: 3 formats; wrote ") and "/s)" in lines[-1]
    assert _run(BAKER, "verify", artifact).returncode == 0

    bad = _run(BAKER, "convert", artifact, "--format", "iso")
    assert bad.returncode == 2
    assert bad.stderr.strip() == (
        "baker: error: --format iso: expected any of raw, qcow2, vmdk, vhdx, vhd, ova."
    )
    missing = _run(BAKER, "convert", artifact.parent / "nope", "--format", "raw")
    assert missing.returncode == 2 and "Traceback" not in missing.stderr

"""baker.image.disk: a bootable GPT disk from a root tar, bit for bit the same from one input."""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import subprocess
import uuid
from dataclasses import astuple
from pathlib import Path

import pytest

from baker.image import bios, disk, layout

SIZE_MIB = 1024
SDE = 1686355200  # 2023-06-10, what the pipeline clamps to
NEW_MTIME = 2000000000  # 2033: newer than SDE, clamped
OLD_MTIME = 1000000000  # 2001: older than SDE, kept
KERNEL = "boot/vmlinuz-6.1.0-test-amd64"


def _run(*argv: str | Path) -> str:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, check=True).stdout


@pytest.fixture(scope="module")
def root_tar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("tree")
    tree = work / "root"
    for rel, text in {
        "etc/hostname": "baked\n",
        "etc/os-release": 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\n',
        "etc/old": "from 2001\n",
        KERNEL: "not really a kernel\n",
        "boot/initrd.img-6.1.0-test-amd64": "not really an initrd\n",
    }.items():
        f = tree / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text)
    os.symlink(KERNEL, tree / "vmlinuz")
    os.symlink("boot/initrd.img-6.1.0-test-amd64", tree / "initrd.img")
    for path in [tree, *tree.rglob("*")]:
        os.utime(path, (NEW_MTIME, NEW_MTIME), follow_symlinks=False)
    os.utime(tree / "etc/old", (OLD_MTIME, OLD_MTIME))  # older than SOURCE_DATE_EPOCH
    tar = work / "root.tar"
    _run(
        "tar", "--create", f"--file={tar}", f"--directory={tree}", "--format=pax",
        "--numeric-owner", "--owner=0", "--group=0", "--sort=name", ".",
    )  # fmt: skip
    assert "./vmlinuz" in _run("tar", "--list", f"--file={tar}").splitlines()
    return tar


@pytest.fixture(scope="module")
def ids() -> disk.DiskIds:
    return disk.DiskIds.derive("unit-test")


@pytest.fixture(scope="module")
def raw(root_tar: Path, ids: disk.DiskIds, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("disk") / "disk.raw"
    disk.assemble(root_tar, out, SIZE_MIB, ids, SDE)
    return out


def _fs(raw: Path) -> str:
    """The root filesystem, for e2fsprogs: the image with the partition's byte offset."""
    return f"{raw}?offset={disk.root_offset()}"


def _debugfs(raw: Path, request: str) -> str:
    return _run("debugfs", "-R", request, _fs(raw))


def _content_digest(path: Path, block: int = 4096) -> str:
    """sha256 over the file's size and every block that is not all zeros, with its offset:
    equal exactly when the bytes are equal, but reads only the allocated extents (a whole
    1 GiB sparse image takes seconds to read here)."""
    h = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        h.update(f"size {size}\n".encode())
        offset = 0
        while offset < size:
            try:
                start = os.lseek(fd, offset, os.SEEK_DATA)
            except OSError:  # ENXIO: only a hole remains
                break
            end = os.lseek(fd, start, os.SEEK_HOLE)
            pos = start - start % block
            while pos < end:
                data = os.pread(fd, min(1 << 20, end - pos), pos)
                for i in range(0, len(data), block):
                    chunk = data[i : i + block]
                    if chunk.count(0) != len(chunk):
                        h.update(f"{pos + i}\n".encode() + chunk)
                pos += len(data)
            offset = end
    finally:
        os.close(fd)
    return h.hexdigest()


def _same_content(a: Path, b: Path, fmt_b: str = "raw") -> bool:
    proc = subprocess.run(
        ["qemu-img", "compare", "-q", "-f", "raw", "-F", fmt_b, str(a), str(b)], check=False
    )
    assert proc.returncode in (0, 1), proc
    return proc.returncode == 0


def _read(path: Path, offset: int, size: int) -> bytes:
    with path.open("rb") as f:
        f.seek(offset)
        return f.read(size)


# --- identifiers ----------------------------------------------------------------------------


def test_disk_ids_are_deterministic_and_distinct() -> None:
    a = disk.DiskIds.derive("base:abc")
    assert disk.DiskIds.derive("base:abc") == a
    b = disk.DiskIds.derive("base:abd")
    assert all(x != y for x, y in zip(astuple(a), astuple(b), strict=True))
    assert len(set(astuple(a))) == 6  # no two roles share an id
    for value in astuple(a):
        u = uuid.UUID(value)
        assert str(u) == value  # canonical lower-case form
        assert u.version == 4 and u.variant == uuid.RFC_4122


# --- layout ---------------------------------------------------------------------------------


def test_raw_size_and_leftovers(raw: Path) -> None:
    assert raw.stat().st_size == SIZE_MIB * 1024 * 1024
    # The GRUB core image and config are written beside the disk, and removed.
    assert sorted(p.name for p in raw.parent.iterdir()) == ["disk.raw"]


def test_gpt_matches_ids_and_layout(raw: Path, ids: disk.DiskIds) -> None:
    table = json.loads(_run("sfdisk", "--json", raw))["partitiontable"]
    assert table["label"] == "gpt"
    assert table["id"] == ids.disk_guid.upper()
    assert table["sectorsize"] == layout.SECTOR
    assert table["firstlba"] == layout.FIRST
    bios, root = table["partitions"]
    assert bios == {
        "node": f"{raw}1",
        "start": layout.FIRST,
        "size": layout.BIOS_BOOT_SECTORS,
        "type": layout.BIOS_BOOT_TYPE,
        "uuid": ids.bios_boot_guid.upper(),
        "name": "bios-boot",
    }
    assert root["start"] * layout.SECTOR == disk.root_offset()
    assert root["start"] == layout.FIRST + layout.BIOS_BOOT_SECTORS
    assert root["type"] == layout.LINUX_ROOT_X86_64_TYPE
    assert root["uuid"] == ids.root_guid.upper()
    assert root["name"] == "root"
    # The rest of the disk, up to the last whole MiB before the backup GPT.
    end = root["start"] + root["size"]
    assert end % 2048 == 0
    assert 0 < table["lastlba"] + 1 - end < 2048


def test_mbr_holds_grub_boot_code_pointing_at_the_core_image(raw: Path) -> None:
    mbr = _read(raw, 0, layout.SECTOR)
    boot_img = (bios.GRUB_DIR / "boot.img").read_bytes()
    assert struct.unpack_from("<Q", mbr, 0x5C)[0] == layout.FIRST
    assert mbr[0x64] == 0xFF  # boot from the drive the BIOS booted from
    assert mbr[0x66:0x68] == b"\x90\x90"  # the floppy probe is skipped
    assert mbr[510:512] == b"\x55\xaa"
    # GRUB's code, unpatched around those fields; the BPB area kept from the disk (zeros).
    assert mbr[0x00:0x03] == boot_img[0x00:0x03]
    assert mbr[0x03:0x5A] == bytes(0x5A - 0x03)
    assert mbr[0x68:0x1B8] == boot_img[0x68:0x1B8]
    # The protective MBR partition entry sfdisk wrote is intact.
    assert mbr[0x1BE + 4] == 0xEE


def test_core_image_blocklist_points_after_its_first_sector(raw: Path) -> None:
    part = _read(raw, layout.FIRST * layout.SECTOR, layout.BIOS_BOOT_SECTORS * layout.SECTOR)
    diskboot = (bios.GRUB_DIR / "diskboot.img").read_bytes()
    start, length = struct.unpack_from("<QH", part, 0x200 - 12)
    assert start == layout.FIRST + 1
    assert 0 < length < layout.BIOS_BOOT_SECTORS
    assert part[: 0x200 - 12] == diskboot[: 0x200 - 12]
    # The core image is `length` sectors after diskboot's one; nothing follows it.
    assert any(part[layout.SECTOR : (1 + length) * layout.SECTOR])
    assert not any(part[(1 + length) * layout.SECTOR :])


def test_root_filesystem_label_uuid_and_hash_seed(raw: Path, ids: disk.DiskIds) -> None:
    stats = _debugfs(raw, "stats")
    assert re.search(r"^Filesystem volume name:\s+baker-root$", stats, re.M)
    assert re.search(rf"^Filesystem UUID:\s+{ids.fs_uuid}$", stats, re.M)
    assert re.search(rf"^Directory Hash Seed:\s+{ids.hash_seed}$", stats, re.M)
    assert re.search(r"^Block size:\s+4096$", stats, re.M)
    count = re.search(r"^Block count:\s+(\d+)$", stats, re.M)
    assert count is not None
    table = json.loads(_run("sfdisk", "--json", raw))["partitiontable"]
    assert int(count.group(1)) == table["partitions"][1]["size"] * layout.SECTOR // 4096


def test_root_filesystem_holds_the_tree(raw: Path) -> None:
    assert _debugfs(raw, "cat /etc/hostname") == "baked\n"
    link = _debugfs(raw, "stat /vmlinuz")
    assert f'Fast link dest: "{KERNEL}"' in link
    assert "User:     0   Group:     0" in _debugfs(raw, "stat /etc/hostname")


def test_file_times_are_clamped_to_source_date_epoch(raw: Path) -> None:
    new = _debugfs(raw, "stat /etc/hostname")
    old = _debugfs(raw, "stat /etc/old")
    assert f" mtime: {SDE:#x}:00000000" in new  # a newer time is clamped
    assert f" mtime: {OLD_MTIME:#x}:00000000" in old  # an older one is kept
    assert f" ctime: {SDE:#x}:00000000" in old


# --- reproducibility ------------------------------------------------------------------------


def test_same_tar_and_ids_give_the_same_bytes(
    raw: Path, root_tar: Path, ids: disk.DiskIds, tmp_path: Path
) -> None:
    again = tmp_path / "again.raw"
    disk.assemble(root_tar, again, SIZE_MIB, ids, SDE)
    assert _content_digest(again) == _content_digest(raw)
    assert _same_content(again, raw)

    other = tmp_path / "other.raw"
    disk.assemble(root_tar, other, SIZE_MIB, disk.DiskIds.derive("another seed"), SDE)
    assert _content_digest(other) != _content_digest(raw)
    assert not _same_content(other, raw)

    later = tmp_path / "later.raw"
    disk.assemble(root_tar, later, SIZE_MIB, ids, SDE + 86400)
    assert _content_digest(later) != _content_digest(raw)


@pytest.mark.parametrize("compression", ["none", "zstd", "zlib"])
def test_to_qcow2_is_reproducible(raw: Path, tmp_path: Path, compression: disk.Compression) -> None:
    one, two = tmp_path / "one.qcow2", tmp_path / "two.qcow2"
    disk.to_qcow2(raw, one, compression)
    disk.to_qcow2(raw, two, compression)
    assert one.read_bytes()[:4] == b"QFI\xfb"
    assert hashlib.sha256(one.read_bytes()).digest() == hashlib.sha256(two.read_bytes()).digest()
    info = json.loads(_run("qemu-img", "info", "--output=json", one))
    assert info["format"] == "qcow2"
    assert info["virtual-size"] == SIZE_MIB * 1024 * 1024
    specific = info["format-specific"]["data"]
    assert specific.get("compression-type", "zlib") == (
        "zlib" if compression == "none" else compression
    )
    assert _same_content(raw, one, "qcow2")
    if compression != "none":
        plain = tmp_path / "plain.qcow2"
        disk.to_qcow2(raw, plain)
        assert one.stat().st_size < plain.stat().st_size

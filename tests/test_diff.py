"""baker.inspect.diff: two small real disks, made the way the pipeline makes them, compared."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from baker.errors import InputError
from baker.evidence import sbom_cdx
from baker.evidence.sbom import Subject
from baker.image import disk, layout
from baker.image.packages import Package
from baker.inspect import disk as inspect_disk
from baker.inspect import files as inspect_files
from baker.inspect import packages as inspect_packages
from baker.inspect.diff import Diff, FileChange, PackageChange, diff, render

SDE = 1686355200
SIZE_MIB = 1024
OLD_MTIME = 1000000000  # 2001-09-09T01:46:40Z
CAP_NET_RAW, CAP_NET_ADMIN = 13, 12

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="loop-mounting needs root")


def _run(*argv: str | Path) -> str:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, check=True).stdout


def _capability(bit: int) -> bytes:
    # struct vfs_cap_data, revision 2, the permitted set only: the kernel checks the layout.
    return struct.pack("<5I", 0x02000000, 1 << bit, 0, 0, 0)


def _tree(root: Path, variant: str) -> None:
    files = {
        "etc/hostname": "baked\n",
        "etc/same": "unchanged\n",
        "etc/samesize": "aaaa\n" if variant == "a" else "bbbb\n",
        "etc/grows": "short\n" if variant == "a" else "rather longer now\n",
        "etc/mode": "secret\n",
        "etc/owned": "owner\n",
        "usr/bin/pinger": "#!/bin/sh\n",
        "srv/data/keep": "kept\n",
        "etc/dated": "when\n",
        # A file in a, a directory in b.
        "srv/thing" if variant == "a" else "srv/thing/inside": "thing\n",
    }
    files["etc/removed" if variant == "a" else "etc/added"] = "here\n"
    for rel, text in files.items():
        f = root / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text)
        f.chmod(0o644)
    (root / "usr/bin/pinger").chmod(0o755)
    if variant == "b":
        (root / "etc/mode").chmod(0o600)
        os.chown(root / "etc/owned", 1000, 0)
        # Older than SOURCE_DATE_EPOCH, so --clamp-mtime keeps it.
        os.utime(root / "etc/dated", (OLD_MTIME, OLD_MTIME))
    os.symlink("etc/hostname" if variant == "a" else "etc/same", root / "link")
    # The brief's user xattr; mkfs.ext4 -d drops it when it reads a tar (see _image).
    os.setxattr(root / "etc/hostname", "user.test", b"one")
    # security.capability is the xattr mkfs.ext4 1.47.2 does carry over from a tar.
    cap = CAP_NET_RAW if variant == "a" else CAP_NET_ADMIN
    os.setxattr(root / "usr/bin/pinger", "security.capability", _capability(cap))


def _tar(tree: Path, tar: Path) -> None:
    _run(
        "tar", "--format=pax", "--numeric-owner", "--xattrs", "--xattrs-include=*",
        "--sort=name", f"--mtime=@{SDE}", "--clamp-mtime", "-C", tree, "-cf", tar, ".",
    )  # fmt: skip


def _image(work: Path, variant: str, seed: str = "x", user_xattr: bool = False) -> Path:
    """A qcow2 from tree `variant`; `user_xattr` sets user.test on /etc/hostname afterwards,
    with debugfs, since mkfs.ext4 1.47.2 keeps only security.capability from a tar."""
    work.mkdir(parents=True)
    tree = work / "tree"
    _tree(tree, variant)
    tar, raw, qcow2 = work / "root.tar", work / "disk.raw", work / "image.qcow2"
    _tar(tree, tar)
    disk.assemble(tar, raw, SIZE_MIB, disk.DiskIds.derive(seed), SDE)
    if user_xattr:
        fs = f"{raw}?offset={disk.root_offset()}"
        _run("debugfs", "-w", "-R", "ea_set /etc/hostname user.test two", fs)
    disk.to_qcow2(raw, qcow2)
    raw.unlink()
    return qcow2


def _packages(*spec: tuple[str, str]) -> list[Package]:
    return [Package(name, version, "amd64", name, version) for name, version in spec]


def _artifact(directory: Path, image: Path, packages: list[Package]) -> Path:
    directory.mkdir(parents=True)
    shutil.copyfile(image, directory / "image.qcow2")
    digest = "sha256:" + _run("sha256sum", directory / "image.qcow2").split()[0]
    (directory / "sbom.cdx.json").write_bytes(
        sbom_cdx.document(
            Subject(
                image_name="test",
                image_file="image.qcow2",
                image_digest=digest,
                packages=packages,
                licenses={},
                source_date_epoch=SDE,
                tool_version="0.1.0",
            )
        )
    )
    return directory


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    work = tmp_path_factory.mktemp("images")
    a = _image(work / "a", "a")
    b = _image(work / "b", "b", user_xattr=True)
    return {
        "a": a,
        "b": b,
        "a-reseeded": _image(work / "a-reseeded", "a", seed="y"),
        "art-a": _artifact(
            work / "art-a", a, _packages(("base-files", "12.4"), ("libfoo", "1.0"), ("old", "2"))
        ),
        "art-b": _artifact(
            work / "art-b", b, _packages(("base-files", "12.4"), ("libfoo", "1.1"), ("new", "3"))
        ),
    }


def _ours(tmp_path: Path) -> Callable[[], set[str]]:
    """Mounts and loop devices that belong to this test (its tmp_path or a default
    scratch directory); other people's builds may mount things on this machine meanwhile."""

    def snapshot() -> set[str]:
        lines = _run("findmnt", "-rn", "-o", "TARGET").splitlines()
        lines += _run("losetup", "-a").splitlines()
        return {line for line in lines if str(tmp_path) in line or "baker-diff-" in line}

    return snapshot


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[Path]:
    """A scratch parent for diff(); after the test it must be empty and nothing mounted."""
    snapshot = _ours(tmp_path)
    before = snapshot()
    work = tmp_path / "work"
    work.mkdir()
    yield work
    assert snapshot() == before
    assert list(work.iterdir()) == []


@pytest.fixture(scope="module")
def ab(images: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Diff:
    work = tmp_path_factory.mktemp("ab-work")
    snapshot = _ours(work)
    before = snapshot()
    result = diff(images["art-a"], images["art-b"], workdir=work)
    assert snapshot() == before
    assert list(work.iterdir()) == []
    return result


def _by_path(d: Diff) -> dict[str, FileChange]:
    paths = [f.path for f in d.files]
    assert len(paths) == len(set(paths)), "a path is reported more than once"
    return {f.path: f for f in d.files}


# -- identical and metadata-only ---------------------------------------------------------------


def test_identical_images_short_circuit(
    images: dict[str, Path], workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_mounting(*args: object) -> None:
        raise AssertionError("identical images must not be mounted")

    monkeypatch.setattr(inspect_disk, "open_image", no_mounting)
    copy = workdir.parent / "copy.qcow2"
    shutil.copyfile(images["a"], copy)
    d = diff(images["a"], copy, workdir=workdir)
    assert d.identical
    assert d.files == () and d.disk == () and d.packages == ()
    assert d.a_digest == d.b_digest and d.a_digest.startswith("sha256:")
    assert render(d).startswith("identical: ")


def test_reseeded_disk_differs_only_in_identifiers(images: dict[str, Path], workdir: Path) -> None:
    d = diff(images["a"], images["a-reseeded"], workdir=workdir)
    assert not d.identical
    assert d.files == ()
    text = "\n".join(d.disk)
    for name in (
        "disk GUID",
        "partition 1 GUID",
        "partition 2 GUID",
        "filesystem UUID",
        "filesystem directory hash seed",
    ):
        assert any(line.startswith(f"{name} ") for line in d.disk), (name, text)
    ids_a, ids_b = disk.DiskIds.derive("x"), disk.DiskIds.derive("y")
    assert f"filesystem UUID {ids_a.fs_uuid} -> {ids_b.fs_uuid}" in d.disk
    assert f"disk GUID {ids_a.disk_guid.upper()} -> {ids_b.disk_guid.upper()}" in d.disk
    assert len(d.disk) == 5, text  # nothing else: same layout, same times, same features
    assert "files: +0 -0 ~0 m0" in render(d)


def test_qcow2_against_its_raw(images: dict[str, Path], workdir: Path) -> None:
    raw = workdir.parent / "a.raw"
    _run("qemu-img", "convert", "-q", "-f", "qcow2", "-O", "raw", images["a"], raw)
    d = diff(images["a"], raw, workdir=workdir)
    assert not d.identical
    assert d.files == ()
    assert d.disk == ("image format qcow2 -> raw",)


# -- file changes ------------------------------------------------------------------------------


def test_each_change_reported_once_with_its_kind(ab: Diff) -> None:
    files = _by_path(ab)
    assert set(files) == {
        "/etc/added",
        "/etc/removed",
        "/etc/samesize",
        "/etc/grows",
        "/etc/mode",
        "/etc/owned",
        "/link",
        "/usr/bin/pinger",
        "/etc/hostname",
        "/etc/dated",
        "/srv/thing",
        "/srv/thing/inside",
    }
    kinds = {path: f.kind for path, f in files.items()}
    assert kinds == {
        "/etc/added": "added",
        "/etc/removed": "removed",
        "/etc/samesize": "changed",
        "/etc/grows": "changed",
        "/etc/mode": "metadata",
        "/etc/owned": "metadata",
        "/link": "changed",
        "/usr/bin/pinger": "metadata",
        "/etc/hostname": "metadata",
        "/etc/dated": "metadata",
        "/srv/thing": "changed",
        "/srv/thing/inside": "added",
    }


def test_change_details(ab: Diff) -> None:
    files = _by_path(ab)
    assert files["/etc/added"].details == ("5 bytes", "mode 0644", "uid 0", "gid 0")
    assert files["/etc/removed"].details[0] == "5 bytes"
    assert files["/etc/grows"].details == ("size 6 -> 18",)
    (sha,) = files["/etc/samesize"].details
    assert sha.startswith("sha256 ") and " -> " in sha
    assert files["/etc/mode"].details == ("mode 0644 -> 0600",)
    assert files["/etc/owned"].details == ("uid 0 -> 1000",)
    assert files["/link"].details == ("symlink etc/hostname -> etc/same",)
    assert files["/usr/bin/pinger"].details == ("xattr security.capability changed",)
    assert files["/etc/hostname"].details == ("xattr user.test added",)
    assert files["/etc/dated"].details == ("mtime 2023-06-10T00:00:00Z -> 2001-09-09T01:46:40Z",)
    assert files["/srv/thing"].details == ("type file -> dir", "mode 0644 -> 0755")


def test_files_are_in_tree_order(ab: Diff) -> None:
    paths = [f.path for f in ab.files]
    assert paths == sorted(paths, key=lambda p: p.split("/"))


def test_layout_identifiers_equal_for_the_same_seed(ab: Diff) -> None:
    # Same seed, same size, same SOURCE_DATE_EPOCH: only the contents differ.
    assert ab.disk == ()


# -- packages ----------------------------------------------------------------------------------


def test_packages_from_sboms(ab: Diff) -> None:
    assert ab.packages_compared
    assert ab.packages == (
        PackageChange("libfoo", "1.0", "1.1"),
        PackageChange("new", None, "3"),
        PackageChange("old", "2", None),
    )


def test_image_files_have_no_packages(images: dict[str, Path], workdir: Path) -> None:
    d = diff(images["a"], images["art-b"], workdir=workdir)
    assert d.packages == () and not d.packages_compared
    assert "packages: not compared" in render(d)


def test_multiarch_and_arch_changes() -> None:
    old = {("libc6", "2.36", "amd64"), ("libc6", "2.36", "i386"), ("tzdata", "1", "amd64")}
    new = {("libc6", "2.37", "amd64"), ("libc6", "2.36", "i386"), ("tzdata", "1", "all")}
    assert inspect_packages.changes(old, new) == (
        PackageChange("libc6:amd64", "2.36", "2.37"),
        PackageChange("tzdata", "1 (amd64)", "1 (all)"),
    )


# -- output ------------------------------------------------------------------------------------


def test_render(ab: Diff) -> None:
    text = render(ab)
    lines = text.splitlines()
    assert lines[0].startswith("different: ") and ab.a_digest in lines[0]
    assert ab.b_digest in lines[0]
    assert "packages: +1 -1 ~1" in lines
    assert "  + new 3" in lines and "  - old 2" in lines and "  ~ libfoo 1.0 -> 1.1" in lines
    assert "files: +2 -1 ~4 m5" in lines
    assert "  + /etc/added (5 bytes)" in lines
    assert "  - /etc/removed" in lines
    assert "  ~ /etc/grows: size 6 -> 18" in lines
    assert "  m /etc/mode: mode 0644 -> 0600" in lines
    assert "disk: 0 differences" in lines


def test_render_limit(ab: Diff) -> None:
    lines = render(ab, limit=2).splitlines()
    assert "  … and 10 more" in lines
    assert sum(line.startswith(("  + /", "  - /", "  ~ /", "  m /")) for line in lines) == 2


def test_render_escapes_hostile_names() -> None:
    name = os.fsdecode(b"/etc/bad\nname\xff")
    d = Diff("a", "b", False, (), (FileChange(name, "removed", ("1 bytes",)),), ())
    assert "  - /etc/bad\\x0aname\\xff" in render(d).splitlines()


def test_as_dict_is_json(ab: Diff) -> None:
    doc = json.loads(json.dumps(ab.as_dict()))
    assert doc["identical"] is False
    assert {"name": "new", "old": None, "new": "3"} in doc["packages"]
    assert {"path": "/etc/mode", "kind": "metadata", "details": ["mode 0644 -> 0600"]} in doc[
        "files"
    ]


# -- bad input and cleaning up -----------------------------------------------------------------


def test_missing_path(images: dict[str, Path], workdir: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        diff(images["a"], workdir.parent / "nope.qcow2", workdir=workdir)


def test_directory_without_image(images: dict[str, Path], workdir: Path) -> None:
    empty = workdir.parent / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match=r"no image\.qcow2"):
        diff(empty, images["art-a"], workdir=workdir)


@pytest.mark.parametrize("same", [False, True], ids=["against-image", "against-itself"])
def test_not_an_image(images: dict[str, Path], workdir: Path, same: bool) -> None:
    text = workdir.parent / "notes.txt"
    text.write_text("not a disk\n" * 100)
    with pytest.raises(InputError, match="not a disk image with a partition table"):
        diff(text, text if same else images["a"], workdir=workdir)


def test_no_linux_partition(images: dict[str, Path], workdir: Path) -> None:
    raw = workdir.parent / "bios-only.raw"
    with raw.open("wb") as f:
        f.truncate(8 << 20)
    script = f"label: gpt\nstart=2048, size=2048, type={layout.BIOS_BOOT_TYPE}\n"
    subprocess.run(["sfdisk", "--quiet", raw], input=script, text=True, check=True)
    with pytest.raises(InputError, match="no root partition"):
        diff(images["a"], raw, workdir=workdir)


def test_root_partition_without_filesystem(images: dict[str, Path], workdir: Path) -> None:
    raw = workdir.parent / "empty-root.raw"
    with raw.open("wb") as f:
        f.truncate(8 << 20)
    script = f"label: gpt\nstart=2048, type={layout.LINUX_ROOT_X86_64_TYPE}\n"
    subprocess.run(["sfdisk", "--quiet", raw], input=script, text=True, check=True)
    with pytest.raises(InputError, match="holds no ext4, XFS or btrfs filesystem"):
        diff(images["a"], raw, workdir=workdir)


def test_cleans_up_when_the_walk_fails(
    images: dict[str, Path], workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mounted: list[Path] = []

    def fail(root: Path) -> None:
        mounted.append(root)
        assert os.path.ismount(root)
        raise RuntimeError("walk failed")

    monkeypatch.setattr(inspect_files, "walk", fail)
    with pytest.raises(RuntimeError, match="walk failed"):
        diff(images["a"], images["b"], workdir=workdir)
    assert mounted and not mounted[0].exists()


def test_default_scratch_directory_is_removed(images: dict[str, Path], tmp_path: Path) -> None:
    snapshot = _ours(tmp_path)
    before = snapshot()
    scratch = Path(os.environ.get("TMPDIR", "/tmp"))
    dirs_before = set(scratch.glob("baker-diff-*"))
    d = diff(images["a"], images["b"])
    assert d.files
    assert snapshot() == before
    assert set(scratch.glob("baker-diff-*")) <= dirs_before

"""Baking on a vendor's cloud image: a Debian 12 cloud image made by mkosi (another image
builder, from bookworm-backports; configuration in vendor-image/), pinned by its sha256.
The build machine is reached through a cloud-init NoCloud seed; the image is re-made in
baker's layout, signed, verified, measured in plain QEMU (launched with a seed, as its
vendor intends), generalized as baker's own images are, and rebuilt from a fresh step cache
to the same digest. Taken as it is (base.capture: as-is), the same image boots through its
own bootloader (mkosi's GRUB and initrd), grows into the larger disk, is generalized and
trimmed in place and published as its disk, said to be not reproducible. A wrong pin is
refused in one line before anything starts."""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from support.bakerun import ROOT, Baked, baker, domains

from baker.inspect import disk

pytestmark = pytest.mark.e2e

TEST = b"""\
def test_the_provisioner_ran(host):
    assert host.file("/etc/motd").contains("baked on a vendor image")


def test_cloud_init_reached_the_machine(host):
    assert host.file("/var/lib/cloud/instance/boot-finished").exists
"""

RECIPE = """\
name: on-vendor
base:
  image: ../vendor/debian-12-vendor.qcow2
  sha256: {sha256}
  boot: bios
# cloud-init's boot is single-threaded Python: one vCPU boots it about as fast under
# emulation, and leaves the suite's other worker the other core.
backend:
  cpus: 1
boot_runs: 1
provisioners:
  - name: motd
    inline: printf 'baked on a vendor image\\n' >/etc/motd
tests:
  - path: testinfra/test_on_vendor.py
    sha256: {test}
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, work_root: Path) -> dict[str, Path]:
    """A project whose recipe names a vendor image mkosi made (compressed qcow2, as
    Debian publishes its genericcloud images)."""
    root = tmp_path_factory.mktemp("vendor")
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    config = root / "mkosi"
    shutil.copytree(ROOT / "tests" / "e2e" / "vendor-image", config)
    made = subprocess.run(["mkosi", "-C", str(config), "-f", "build"], capture_output=True,
                          text=True, check=False)  # fmt: skip
    assert made.returncode == 0, made.stdout[-3000:] + made.stderr[-3000:]
    (root / "vendor").mkdir()
    image = root / "vendor" / "debian-12-vendor.qcow2"
    subprocess.run(["qemu-img", "convert", "-c", "-O", "qcow2", str(config / "vendor.raw"),
                    str(image)], check=True)  # fmt: skip
    # Its partition table as mkosi made it: the image taken as it is must keep it.
    table = disk.partition_table(config / "vendor.raw", config / "vendor.raw")
    (root / "vendor" / "table.json").write_text(json.dumps(table))
    shutil.rmtree(config)
    (root / "images" / "testinfra").mkdir(parents=True)
    (root / "images" / "testinfra" / "test_on_vendor.py").write_bytes(TEST)
    recipe = root / "images" / "on-vendor.yaml"
    recipe.write_text(RECIPE.format(sha256=_sha256(image), test=hashlib.sha256(TEST).hexdigest()))
    work = work_root / "vendor"
    work.mkdir(mode=0o711)
    return {"root": root, "image": image, "recipe": recipe, "work": work,
            "cache": root / "cache", "out": root / "out"}  # fmt: skip


def _sha256(path: Path) -> str:
    return subprocess.run(["sha256sum", str(path)], capture_output=True, text=True,
                          check=True).stdout.split()[0]  # fmt: skip


@pytest.fixture(scope="module")
def built(project: dict[str, Path], signing_key: Path) -> Baked:
    proc = baker("build", project["recipe"], "--out", project["out"], "--sign-key", signing_key,
                 cache=project["cache"], work=project["work"])  # fmt: skip
    return Baked(project["out"] / "on-vendor", proc.stdout.split()[-1], proc.stdout, proc.stderr)


def test_a_build_on_a_vendor_image_verifies_and_records_the_image(
    built: Baked, project: dict[str, Path], signing_key: Path
) -> None:
    assert built.digest.startswith("sha256:")
    checked = baker("verify", built.artifact, "--pub", signing_key.with_name("baker.pub"),
                    cache=project["cache"], work=project["work"])  # fmt: skip
    assert "FAIL" not in checked.stdout
    record = json.loads((built.artifact / "build.json").read_text())
    vendor = record["pins"]["base"]["cloud_image"]
    assert vendor["sha256"] == f"sha256:{_sha256(project['image'])}"
    assert vendor["source"] == str(project["image"]) and "no signature" in vendor["trust"]
    statement = json.loads((built.artifact / "provenance.json").read_text())
    deps = statement["predicate"]["buildDefinition"]["resolvedDependencies"]
    (image,) = [d for d in deps if d["name"] == "cloud-image"]
    assert image["uri"] == f"file:{project['image']}"
    assert image["digest"] == {"sha256": _sha256(project["image"])}
    sbom = json.loads((built.artifact / "sbom.cdx.json").read_text())
    purls = {c["purl"].split("@")[0] for c in sbom["components"]}
    assert {"pkg:deb/debian/cloud-init", "pkg:deb/debian/openssh-server"} <= purls
    assert all("distro=debian-12" in c["purl"] for c in sbom["components"])
    cases = list(ET.parse(built.artifact / "verify.junit.xml").getroot().iter("testcase"))
    assert len(cases) == 2 and not [c for c in cases if len(c)]
    # Measured in plain QEMU, launched with a seed as the vendor's image expects.
    boot = json.loads((built.artifact / "boot.json").read_text())
    assert list(boot["firmware"]) == ["bios"] and boot["runs"] == 1


def test_the_published_image_keeps_nothing_of_the_build(built: Baked, work_root: Path) -> None:
    with disk.scratch(work_root) as work, contextlib.ExitStack() as stack:
        root = disk.open_image(built.artifact / "image.qcow2", "vendor", work, stack).root
        assert (root / "etc/machine-id").read_bytes() == b""
        assert not list((root / "etc/ssh").glob("ssh_host_*"))
        assert list((root / "var/lib/cloud").iterdir()) == []  # cloud-init clean
        assert not list((root / "var/log").glob("cloud-init*"))
        # The image had root's .ssh but no authorized_keys: so it is again.
        assert (root / "root/.ssh").is_dir() and not (root / "root/.ssh/authorized_keys").exists()
        assert not (root / "usr/local/lib/baker").exists()
        assert not (root / "etc/ssh/sshd_config.d/baker-build.conf").exists()
        # Neither build key (their comments say baker-build) is anywhere in the image.
        found = subprocess.run(["grep", "-rls", "baker-build", "etc", "root", "var", "home"],
                               cwd=root, capture_output=True, text=True, check=False)  # fmt: skip
        assert found.stdout == ""
        assert (root / "etc/motd").read_text() == "baked on a vendor image\n"


def test_a_rebuild_from_a_fresh_cache_gives_the_same_digest(
    built: Baked, project: dict[str, Path]
) -> None:
    proc = baker("rebuild", "--check", built.artifact, cache=project["root"] / "cache-2",
                 work=project["work"], check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert proc.stdout.strip() == f"reproduced {built.digest}"


def test_an_image_that_is_not_the_pin_is_refused_before_anything_starts(
    project: dict[str, Path],
) -> None:
    wrong = project["root"] / "images" / "wrong-pin.yaml"
    wrong.write_text(RECIPE.format(sha256="ab" * 32, test=hashlib.sha256(TEST).hexdigest()))
    before = domains()
    out = project["root"] / "out-wrong"
    proc = baker("build", wrong, "--out", out, cache=project["cache"], work=project["work"],
                 check=False)  # fmt: skip
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines[-1] == (
        f"baker: error: {wrong}:4: base.sha256: {project['image']} has sha256 "
        f"{_sha256(project['image'])}, but the recipe pins {'ab' * 32}."
    )
    assert "Traceback" not in proc.stderr
    # No machine of this recipe's (the other worker's may come and go meanwhile).
    assert not out.exists() and {d for d in domains() - before if "on-vendor" in d} == set()


@pytest.fixture(scope="module")
def as_is(project: dict[str, Path], signing_key: Path) -> subprocess.CompletedProcess[str]:
    """A build on mkosi's image taken as it is, onto a larger disk: the build machine boots
    it the vendor's way, through mkosi's GRUB and mkosi's own initrd on the ESP (the re-made
    build boots the image's initramfs-tools initrd from baker's layout instead)."""
    recipe = project["root"] / "images" / "on-vendor-as-is.yaml"
    recipe.write_text(
        project["recipe"].read_text()
        .replace("name: on-vendor", "name: on-vendor-as-is")
        .replace("  boot: bios\n", "  boot: bios\n  capture: as-is\n  disk_size_mib: 3072\n")
    )  # fmt: skip
    return baker("build", recipe, "--out", project["out"], "--sign-key", signing_key,
                 cache=project["cache"], work=project["work"], check=False)  # fmt: skip


def test_taken_as_it_is_the_image_boots_its_own_way_and_says_it_is_not_reproducible(
    as_is: subprocess.CompletedProcess[str], project: dict[str, Path], signing_key: Path
) -> None:
    assert as_is.returncode == 0, as_is.stderr[-4000:]
    artifact = project["out"] / "on-vendor-as-is"
    record = json.loads((artifact / "build.json").read_text())
    # Generalized on the machine and imaged as its disk: no capture step.
    assert set(record["steps"]) == {"base", "boot", "provision", "verify", "generalize",
                                    "shutdown", "image", "leak-check", "measure"}  # fmt: skip
    assert record["image"]["reproducible"] is False
    assert "as-is" in record["image"]["why_not_reproducible"]
    # The build machine's discarded free space: fstrim said what it trimmed.
    assert re.search(r"generalize \| /: .* trimmed", as_is.stderr), as_is.stderr[-3000:]
    pub = signing_key.with_name("baker.pub")
    checked = baker("verify", artifact, "--pub", pub, cache=project["cache"],
                    work=project["work"])  # fmt: skip
    assert "FAIL" not in checked.stdout
    shown = baker("inspect", artifact, cache=project["cache"], work=project["work"])
    assert "  rebuild   not reproducible (base.capture: as-is:" in shown.stdout
    sbom = json.loads((artifact / "sbom.cdx.json").read_text())
    assert "pkg:deb/debian/cloud-init" in {c["purl"].split("@")[0] for c in sbom["components"]}
    boot = json.loads((artifact / "boot.json").read_text())
    assert list(boot["firmware"]) == ["bios"] and boot["runs"] == 1
    # Nothing to rebuild it to: refused in one line.
    again = baker("rebuild", "--check", artifact, cache=project["cache"], work=project["work"],
                  check=False)  # fmt: skip
    assert again.returncode == 2
    assert again.stderr.strip().splitlines()[-1].endswith("there is nothing to rebuild it to.")


def test_taken_as_it_is_the_disk_is_the_vendors_grown_and_generalized(
    as_is: subprocess.CompletedProcess[str], project: dict[str, Path], work_root: Path
) -> None:
    assert as_is.returncode == 0, as_is.stderr[-4000:]
    image = project["out"] / "on-vendor-as-is" / "image.qcow2"
    with disk.scratch(work_root) as work, contextlib.ExitStack() as stack:
        opened = disk.open_image(image, "as-is", work, stack)
        root = opened.root
        # The vendor's own partitions (mkosi's ESP, BIOS boot and root, where mkosi put
        # them), the root grown by cloud-init into the 3 GiB disk the recipe asks for (the
        # image's was under 1 GiB).
        assert opened.info["virtual-size"] == 3072 << 20
        vendor_table = json.loads((project["root"] / "vendor" / "table.json").read_text())
        kept = [(p["start"], p["type"]) for p in opened.table["partitions"]]
        assert kept == [(p["start"], p["type"]) for p in vendor_table["partitions"]]
        sector = int(opened.table.get("sectorsize", 512))
        assert int(opened.table["partitions"][-1]["size"]) * sector > 2900 << 20
        block = int(opened.superblock["Block size"])
        assert int(opened.superblock["Block count"]) * block > 2800 << 20
        assert (root / "etc/machine-id").read_bytes() == b""
        assert not list((root / "etc/ssh").glob("ssh_host_*"))
        assert list((root / "var/lib/cloud").iterdir()) == []  # cloud-init clean
        assert (root / "root/.ssh").is_dir() and not (root / "root/.ssh/authorized_keys").exists()
        assert not (root / "usr/local/lib/baker").exists()
        found = subprocess.run(["grep", "-rls", "baker-build", "etc", "root", "var", "home"],
                               cwd=root, capture_output=True, text=True, check=False)  # fmt: skip
        assert found.stdout == ""
        assert (root / "etc/motd").read_text() == "baked on a vendor image\n"

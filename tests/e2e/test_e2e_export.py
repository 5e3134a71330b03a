"""Across an air gap: the locked, signed web image exported in every format with its sources,
imported into a fresh directory and a fresh package cache, checked every way (the signature
with the key the importer trusts), and rebuilt there with the mirror unreachable to the same
digest."""

from __future__ import annotations

import hashlib
import json
import subprocess
import tarfile
from pathlib import Path

import pytest
from lxml import etree
from support.bakerun import OFFLINE, AirGap, Baked, baker, sha256

pytestmark = pytest.mark.e2e

NAME = "debian-12-web"
DRIVERS = {"raw": "raw", "vmdk": "vmdk", "vhdx": "vhdx", "vhd": "vpc"}
OVF = "http://schemas.dmtf.org/ovf/envelope/1"
RASD = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"


def _same_disk(path: Path, driver: str, qcow2: Path | str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["qemu-img", "compare", "-f", driver, "-F", "qcow2", str(path),
                           str(qcow2)], capture_output=True, text=True, check=False)  # fmt: skip


def _check_ova(ova: Path, qcow2: Path) -> None:
    """The OVA read as an importer would: .ovf first, then .mf, every file in the manifest
    with its SHA-256, the descriptor's references and capacity, the disk equal to the qcow2."""
    with tarfile.open(ova) as tar:
        members = tar.getmembers()
        data = {m.name: tar.extractfile(m).read() for m in members[:2]}  # type: ignore[union-attr]
        digests = {}
        for m in members:
            h, f = hashlib.sha256(), tar.extractfile(m)
            while chunk := f.read(1 << 20):  # type: ignore[union-attr]
                h.update(chunk)
            digests[m.name] = h.hexdigest()
    names = [m.name for m in members]
    assert names == [f"{NAME}.ovf", f"{NAME}.mf", "image.vmdk"]
    lines = data[f"{NAME}.mf"].decode().splitlines()
    manifest = dict(line.removeprefix("SHA256(").split(")= ") for line in lines)
    assert manifest == {n: digests[n] for n in (f"{NAME}.ovf", "image.vmdk")}

    ns = {"ovf": OVF, "rasd": RASD}
    root = etree.fromstring(data[f"{NAME}.ovf"])
    (ref,) = root.findall("ovf:References/ovf:File", ns)
    assert ref.get(f"{{{OVF}}}href") == "image.vmdk"
    assert ref.get(f"{{{OVF}}}size") == str(members[2].size)
    (disk,) = root.findall("ovf:DiskSection/ovf:Disk", ns)
    assert disk.get(f"{{{OVF}}}capacity") == str(2048 << 20)
    hardware = {
        item.findtext("rasd:ResourceType", namespaces=ns): item.findtext(
            "rasd:VirtualQuantity", namespaces=ns
        )
        for item in root.iterfind(".//ovf:Item", ns)
    }
    assert (hardware["3"], hardware["4"]) == ("2", "1024")  # the recipe's backend
    inner = {"driver": "raw", "offset": members[2].offset_data, "size": members[2].size,
             "file": {"driver": "file", "filename": str(ova)}}  # fmt: skip
    spec = "json:" + json.dumps({"driver": "vmdk", "file": inner})
    proc = _same_disk(Path(spec), "vmdk", qcow2)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_export_import_check_and_rebuild_offline(
    project: dict[str, Path], two_builds: tuple[Baked, Baked], airgap: AirGap, signing_key: Path
) -> None:
    built, rebuilt = two_builds
    a = airgap
    assert a.exported.stdout.startswith("signed by ") and "with sources" in a.exported.stdout
    assert a.exported.stdout.strip().splitlines()[-1].endswith(f"sha256:{sha256(a.bundle)}")

    # The other side: a fresh directory and package cache, no network.
    into, cache = a.into, a.cache
    assert f"imported {NAME} ({built.digest}) into {into}" in a.imported.stdout
    assert "the key you gave" in a.imported.stdout  # the signed bundle, checked with --pub
    recipe = into / "sources" / "images" / f"{NAME}.yaml"
    assert f"--recipe {recipe}" in a.imported.stdout
    assert recipe.with_suffix(".lock").is_file()
    assert (into / "sources" / "provisioners" / "create-user.sh").is_file()
    lock = json.loads((into / "build.json").read_text())["pins"]["debs"]
    assert len(list((cache / "debs").glob("*.deb"))) == len(lock) > 100

    # Not work_b: the stale-lock test (test_e2e_reproducible) builds there, maybe meanwhile.
    pub = signing_key.with_name("baker.pub")
    verified = baker("verify", into, "--pub", pub, cache=cache, work=project["work_a"],
                     env=OFFLINE)  # fmt: skip
    assert "FAIL" not in verified.stdout
    qcow2 = into / "image.qcow2"
    for fmt, driver in DRIVERS.items():
        proc = _same_disk(into / f"image.{fmt}", driver, qcow2)
        assert proc.returncode == 0, (fmt, proc.stdout, proc.stderr)
    _check_ova(into / "image.ova", qcow2)

    # Rebuilt there, offline, from the imported sources (`rebuild --check --keep`).
    assert a.rebuilt.stdout.strip() == f"reproduced {built.digest}"
    assert rebuilt.digest == built.digest
    assert not (rebuilt.artifact / "boot.json").exists()  # a rebuild compares, never measures

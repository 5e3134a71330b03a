"""Bake both example recipes for real (the web one as the project's locked copy, conftest's
`first_build`), then boot what was published with plain qemu."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import paramiko
import pytest
from support.bakerun import ROOT, Baked, sha256

from baker.backends import plainqemu as plainboot
from baker.evidence import sbom_cdx, sbom_spdx

pytestmark = pytest.mark.e2e

ARTIFACT_FILES = {
    "image.qcow2",
    "SHA256SUMS",
    "build.json",
    "boot.json",
    "verify.junit.xml",
    "sbom.cdx.json",
    "sbom.spdx.json",
    "provenance.json",
    "provenance.dsse.json",
    "image.qcow2.sig",
}


def sh(client: paramiko.SSHClient, command: str) -> str:
    _, out, err = client.exec_command(command, timeout=60)
    code = out.channel.recv_exit_status()
    assert code == 0, f"{command!r} exited {code}: {err.read().decode()}"
    return out.read().decode()


def installed_packages(client: paramiko.SSHClient) -> set[tuple[str, str, str]]:
    """(name, version, arch) of every package dpkg says is installed in the running image."""
    listing = sh(
        client, r"dpkg-query -W -f '${db:Status-Status} ${Package} ${Version} ${Architecture}\n'"
    )
    return {
        tuple(line.split()[1:4])  # type: ignore[misc]
        for line in listing.splitlines()
        if line.startswith("installed ")
    }


def sbom_packages(artifact: Path) -> set[tuple[str, str, str]]:
    cdx = sbom_cdx.packages_in(json.loads((artifact / "sbom.cdx.json").read_text()))
    spdx = sbom_spdx.packages_in(json.loads((artifact / "sbom.spdx.json").read_text()))
    assert cdx == spdx
    return cdx


def check_artifact(
    baked: Baked, recipe: str, n_tests: int, n_runs: int = 3, scanned: bool = False
) -> dict[str, Any]:
    """`scanned`: the build had a vulnerability snapshot (the session's base)."""
    files = ARTIFACT_FILES | ({"vulns.cdx.json"} if scanned else set())
    assert {p.name for p in baked.artifact.iterdir()} == files
    image = baked.artifact / "image.qcow2"
    assert baked.digest == f"sha256:{sha256(image)}"
    subprocess.run(
        ["sha256sum", "--check", "--quiet", "SHA256SUMS"], cwd=baked.artifact, check=True
    )
    listed = {line.split()[1] for line in (baked.artifact / "SHA256SUMS").read_text().splitlines()}
    assert listed == files - {"SHA256SUMS"}
    info = subprocess.run(
        ["qemu-img", "info", "--output=json", image], capture_output=True, text=True, check=True
    )
    assert json.loads(info.stdout)["format"] == "qcow2"

    record: dict[str, Any] = json.loads((baked.artifact / "build.json").read_text())
    recipe_bytes = (ROOT / recipe).read_bytes()
    assert record["recipe"]["digest"] == f"sha256:{hashlib.sha256(recipe_bytes).hexdigest()}"
    assert record["image"]["digest"] == baked.digest
    assert set(record["steps"]) == {"base", "disk", "boot", "provision", "verify", "shutdown",
                                    "capture", "leak-check", "image", "measure",
                                    *(["scan"] if scanned else [])}  # fmt: skip
    # Shutdown makes nothing; the scan reads the image and today's date (not keyed).
    keyed = {n: s for n, s in record["steps"].items() if n not in ("shutdown", "scan")}
    assert all(re.fullmatch(r"[0-9a-f]{64}", s["key"]) for s in keyed.values())
    assert {s["status"] for s in record["steps"].values()} <= {"ran", "reused"}
    assert record["accel"] in ("kvm", "tcg")
    assert "openssh-server" in record["pins"]["packages"]
    assert record["tests"]["tests"] == n_tests
    assert record["tests"]["failures"] == record["tests"]["errors"] == 0

    boot = json.loads((baked.artifact / "boot.json").read_text())
    assert boot["image"] == baked.digest
    assert boot["runs"] == len(boot["each_run"]) == n_runs
    assert boot["accel"] == record["accel"]
    for run in boot["each_run"]:
        assert run["time_to_ssh_s"] > 0
        assert run["kernel_s"] > 0 and run["userspace_s"] > 0
    # The slowest units once per firmware: on its first boot.
    for runs in (f["each_run"] for f in boot["firmware"].values()):
        assert runs[0]["slowest_units"] and all("slowest_units" not in r for r in runs[1:])
    assert boot["within_budget"] is True

    junit = ET.parse(baked.artifact / "verify.junit.xml").getroot()
    cases = list(junit.iter("testcase"))
    assert len(cases) == n_tests
    assert not [c for c in cases if c.find("failure") is not None or c.find("error") is not None]
    return record


def test_base_artifact(base_image: Baked) -> None:
    check_artifact(base_image, "images/debian-12-base.yaml", n_tests=5, scanned=True)
    # Progress reached the log as plain step lines (stderr is not a terminal here); the base
    # and disk may come from the session's step cache.
    steps = ("boot", "provision", "verify", "shutdown", "capture", "leak-check", "image", "scan",
             "measure", "attest", "publish")  # fmt: skip
    for step in steps:
        assert f"==> {step}:" in base_image.stderr
    for step in ("base", "disk"):
        assert f"==> {step}:" in base_image.stderr or f"reused {step}" in base_image.stderr


SECURE_BOOT_VAR = "/sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c"


def test_base_boots_plainly_generalized_and_fresh_each_time(
    base_image: Baked, tmp_path: Path
) -> None:
    """Two launches of the published hybrid image with plain qemu (no -kernel, no libvirt),
    each a fresh machine: under SeaBIOS from the IDE bus on a 20 GiB disk (the root grows into
    it; with no datasource cloud-init stays out of the way), and under OVMF with Secure Boot
    enforcing from a virtio disk. Each boot under TCG costs ~20-50 s: each carries every
    check."""
    image = base_image.artifact / "image.qcow2"
    before = sha256(image)
    larger = tmp_path / "larger.qcow2"  # the image behind an overlay: the disk users launch
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(image),
                    str(larger), "20G"], check=True)  # fmt: skip
    launches: list[tuple[Path, plainboot.Firmware, str]] = [
        (larger, "bios", "ide"),
        (image, "uefi", "virtio"),
    ]
    seen = []
    for disk, firmware, interface in launches:
        with plainboot.boot(disk, tmp_path, "tcg", firmware=firmware,
                            disk_interface=interface) as machine:  # fmt: skip
            client, _ = machine.wait_for_ssh(timeout=300)
            with client:
                assert sh(client, "systemctl is-system-running --wait || true").strip() == (
                    "running"
                )
                efi = sh(client, "test -d /sys/firmware/efi && echo efi || echo bios").strip()
                assert efi == ("bios" if firmware == "bios" else "efi")
                if firmware == "uefi":
                    # The variable's four attribute bytes, then 1 when Secure Boot enforces.
                    assert sh(client, f"od -An -tu1 -j4 -N1 {SECURE_BOOT_VAR}").strip() == "1"
                else:
                    assert "status: disabled" in sh(client, "cloud-init status || true")
                    assert sh(client, "hostname").strip() == "debian"
                    partition = int(sh(client, "lsblk -bno SIZE /dev/sda2").strip())
                    filesystem = int(sh(client, "df -B1 --output=size / | tail -1").strip())
                    assert partition > 19 << 30
                    assert filesystem > 18 << 30
                machine_id = sh(client, "cat /etc/machine-id").strip()
                assert re.fullmatch(r"[0-9a-f]{32}", machine_id)
                host_key = sh(client, "ssh-keygen -l -f /etc/ssh/ssh_host_ed25519_key.pub")
                assert host_key.split()[1] in machine.host_fingerprints()
                # ed25519 and ECDSA by default (no RSA), both printed on the console.
                keys = sh(client, "ls /etc/ssh/ | grep '^ssh_host_.*_key$'").split()
                assert keys == ["ssh_host_ecdsa_key", "ssh_host_ed25519_key"]
                assert len(machine.host_fingerprints()) == 2
                # What a VM image's boot does without: e2scrub_reap, the console chatter.
                assert sh(client, "systemctl is-enabled e2scrub_reap || true").strip() == "disabled"
                assert " quiet" in sh(client, "cat /proc/cmdline")
                assert "baked by baker" in sh(client, "cat /etc/motd")
                # Nothing of the build machine is left.
                leftovers = sh(
                    client,
                    "ls -d /etc/ssh/sshd_config.d/baker-build.conf /usr/local/lib/baker "
                    "/etc/systemd/system/baker-build-access.service /root/.bash_history "
                    "/run/baker 2>/dev/null || true",
                )
                assert leftovers.strip() == ""
                assert sh(client, "ls /var/log/journal").split() == [machine_id]
                assert sh(client, "find /var/lib/apt/lists -type f ! -name lock").strip() == ""
                assert installed_packages(client) == sbom_packages(base_image.artifact)
                seen.append((machine_id, host_key))
    # Two boots of one image: two machines, each with its own identity.
    assert seen[0][0] != seen[1][0]
    assert seen[0][1] != seen[1][1]
    assert sha256(image) == before  # booting never wrote the published image


def test_web_artifact(web_image: Baked, project: dict[str, Path]) -> None:
    # The project's locked copy of the recipe, measured once as it says (the session's base is
    # measured as the shipped recipe says).
    record = check_artifact(web_image, str(project["recipe"]), n_tests=10, n_runs=1)
    assert record["pins"]["lock"]["digest"].startswith("sha256:")
    assert "nginx" in record["pins"]["packages"]
    files = record["pins"]["files"]
    script = ROOT / "provisioners/create-user.sh"
    assert files["../provisioners/create-user.sh"] == f"sha256:{sha256(script)}"


def test_web_serves_its_page_after_plain_boot(web_image: Baked, tmp_path: Path) -> None:
    image = web_image.artifact / "image.qcow2"
    with plainboot.boot(image, tmp_path, "tcg") as machine:
        client, _ = machine.wait_for_ssh(timeout=300)
        with client:
            # sshd can answer before nginx listens: the page is asked for once the boot is
            # done, as a user's health check would wait for it.
            sh(client, "systemctl is-system-running --wait >/dev/null; true")
            page = sh(
                client,
                "bash -c 'exec 3<>/dev/tcp/127.0.0.1/80; "
                'printf "GET / HTTP/1.0\\r\\n\\r\\n" >&3; cat <&3\'',
            )
            assert "200 OK" in page
            assert "baked by baker" in page
            assert sh(client, "id -un web-admin").strip() == "web-admin"
            assert "passwordauthentication no" in sh(client, "sshd -T")
            assert sh(client, "cat /run/image-release").strip() == "IMAGE=debian-12-web"
            assert installed_packages(client) == sbom_packages(web_image.artifact)
            assert sh(client, "systemctl is-enabled nginx image-release").split() == [
                "enabled",
                "enabled",
            ]

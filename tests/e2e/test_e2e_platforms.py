"""Images that run where teams run them: the default (hybrid) image boots under SeaBIOS, under
OVMF and under OVMF with Secure Boot enforcing; the root grows into a larger disk; launched
on VMware's disk and NIC, it works and takes a NoCloud seed's user, key and hostname; Hyper-V's
drivers are there. Debian 13 has tests of its own (test_e2e_debian13.py)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import paramiko
import pytest
from support.bakerun import Baked

from baker.backends import plainqemu
from baker.edge import ssh

pytestmark = pytest.mark.e2e

SECURE_BOOT_VAR = "/sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c"


def sh(client: paramiko.SSHClient, command: str) -> str:
    _, out, err = client.exec_command(command, timeout=120)
    code = out.channel.recv_exit_status()
    assert code == 0, f"{command!r} exited {code}: {err.read().decode()}"
    return out.read().decode()


@pytest.mark.parametrize("firmware", ["bios", "uefi"])
def test_the_hybrid_image_boots_under_each_firmware(
    base_image: Baked, tmp_path: Path, firmware: plainqemu.Firmware
) -> None:
    """Each firmware boots the published image (UEFI with Secure Boot enforcing). One boot
    carries more checks, each boot under TCG costing ~20 s: on a 20 GiB disk with no
    datasource, the root grows into the disk and cloud-init stays out of the way."""
    image = (
        _larger(base_image, tmp_path) if firmware == "bios" else base_image.artifact / "image.qcow2"
    )
    with plainqemu.boot(image, tmp_path, "tcg", firmware=firmware) as machine:
        client, _ = machine.wait_for_ssh(timeout=300)
        with client:
            efi = sh(client, "test -d /sys/firmware/efi && echo efi || echo bios").strip()
            assert efi == ("bios" if firmware == "bios" else "efi")
            if firmware != "bios":
                # The variable's four attribute bytes, then 1 when Secure Boot is enforcing.
                state = sh(client, f"od -An -tu1 -j4 -N1 {SECURE_BOOT_VAR}").strip()
                assert state == "1"
            assert sh(client, "systemctl is-system-running --wait || true").strip() == "running"
            if firmware == "bios":
                assert "status: disabled" in sh(client, "cloud-init status || true")
                assert sh(client, "hostname").strip() == "debian"
                partition = int(sh(client, "lsblk -bno SIZE /dev/vda2").strip())
                filesystem = int(sh(client, "df -B1 --output=size / | tail -1").strip())
                assert partition > 19 << 30
                assert filesystem > 18 << 30


def _larger(base_image: Baked, tmp_path: Path) -> Path:
    """The image behind a 20 GiB overlay: the disk a user launches it on."""
    larger = tmp_path / "larger.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2",
                    "-b", str(base_image.artifact / "image.qcow2"), str(larger), "20G"],
                   check=True)  # fmt: skip
    return larger


def test_boot_json_measures_each_firmware(base_image: Baked) -> None:
    """A hybrid image is measured the way it is launched most, under UEFI, boot_runs times,
    and once under BIOS, which it claims too and must boot within the budget."""
    boot = json.loads((base_image.artifact / "boot.json").read_text())
    runs = {name: f["runs"] for name, f in boot["firmware"].items()}
    assert runs == {"uefi": 3, "bios": 1}
    for figures in boot["firmware"].values():
        assert figures["runs"] == len(figures["each_run"])
        assert figures["time_to_ssh_s"] > 0 and figures["within_budget"] is True
    assert boot["time_to_ssh_s"] == boot["firmware"]["uefi"]["time_to_ssh_s"]
    record = json.loads((base_image.artifact / "build.json").read_text())
    assert record["image"]["boot"] == "hybrid"


def _seed(directory: Path, public_key: str) -> Path:
    """A NoCloud seed, as a user would make one: user-data and meta-data on an ISO9660
    volume labelled cidata."""
    src = directory / "seed"
    src.mkdir()
    (src / "meta-data").write_text("instance-id: i-baker-test\nlocal-hostname: baked-host\n")
    (src / "user-data").write_text(
        "#cloud-config\nusers:\n  - name: tester\n    shell: /bin/bash\n"
        f"    ssh_authorized_keys:\n      - {public_key}\n"
    )
    iso = directory / "seed.iso"
    subprocess.run(
        [
            "genisoimage",
            "-quiet",
            "-output",
            str(iso),
            "-volid",
            "cidata",
            "-joliet",
            "-rock",
            str(src / "user-data"),
            str(src / "meta-data"),
        ],
        check=True,
    )
    return iso


def test_an_ova_launch_vmware_hardware_and_a_nocloud_seed(
    base_image: Baked, tmp_path: Path
) -> None:
    """Launched as an imported OVA commonly is: the disk on VMware's paravirtual SCSI
    controller, the NIC VMware's VMXNET3 (what the OVA's descriptor asks for), and a NoCloud
    seed on a CD-ROM that gives a user, a key and a hostname. One boot carries both."""
    private, public = ssh.generate_keypair("tester")
    seed = _seed(tmp_path, public)
    image = base_image.artifact / "image.qcow2"
    with plainqemu.boot(
        image, tmp_path, "tcg", disk_interface="pvscsi", nic="vmxnet3",
        extra=["-drive", f"file={seed},media=cdrom,format=raw"],
    ) as machine:  # fmt: skip
        client, _ = machine.wait_for_ssh(timeout=300)
        with client:
            sh(client, "cloud-init status --wait >/dev/null || true")
            assert sh(client, "findmnt -no SOURCE /").strip() == "/dev/sda2"
            drivers = sh(client, "ls /sys/class/net/*/device/driver -d | xargs -n1 readlink")
            assert "vmxnet3" in drivers
            modules = ["hv_vmbus", "hv_storvsc", "hv_netvsc", "vmw_pvscsi", "vmxnet3", "ata_piix"]
            sh(client, f"modinfo {' '.join(modules)} >/dev/null")
            initrd = sh(client, "lsinitramfs /initrd.img")
            for storage in ("hv_storvsc", "vmw_pvscsi", "ata_piix", "virtio_blk", "sr_mod"):
                assert f"/{storage}.ko" in initrd, f"{storage} is not in the initrd"
        tester = ssh.connect(
            machine.endpoint,
            ssh.private_key(private),
            user="tester",
            console_fingerprints=machine.host_fingerprints,
            timeout=30,
        )
        with tester:
            assert sh(tester, "id -un").strip() == "tester"
            assert sh(tester, "hostname").strip() == "baked-host"
            assert "status: done" in sh(tester, "cloud-init status")

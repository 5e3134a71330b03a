"""The libvirt domain XML: valid against libvirt's schema, user-mode NIC on 127.0.0.1 only."""

from __future__ import annotations

import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from lxml import etree

from baker.backends.libvirt import domain_xml

SCHEMA = Path("/usr/share/libvirt/schemas/domain.rng")
QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"
OEM = ["io.systemd.credential:baker.key=ssh-ed25519 AAAA <&> \"quoted\" 'single'", "plain"]


def _xml(accel: str = "tcg", port: int = 40022, **over: object) -> str:
    args: dict[str, object] = {
        "name": "baker-demo-0a1b2c3d",
        "disk": Path("/var/tmp/baker-x/overlay.qcow2"),
        "console_log": Path("/var/tmp/baker-x/console.log"),
        "ssh_port": port,
        "accel": accel,
        "memory_mib": 1024,
        "cpus": 2,
        "oem_strings": OEM,
    }
    args.update(over)
    return domain_xml(**args)  # type: ignore[arg-type]


def _broken(xml: str) -> str:
    """The same document with one element libvirt's schema does not know."""
    assert xml.count("</vcpu>") == 1
    return xml.replace("</vcpu>", "</vcpu>\n  <vcpu_count>2</vcpu_count>")


def _virt_xml_validate(path: Path) -> subprocess.CompletedProcess[str]:
    if shutil.which("virt-xml-validate") is None or shutil.which("xmllint") is None:
        pytest.fail("virt-xml-validate needs libvirt-clients and libxml2-utils installed")
    return subprocess.run(
        ["virt-xml-validate", str(path), "domain"], capture_output=True, text=True, check=False
    )


@pytest.mark.parametrize("accel", ["tcg", "kvm"])
def test_virt_xml_validate_accepts_it(tmp_path: Path, accel: str) -> None:
    f = tmp_path / "domain.xml"
    f.write_text(_xml(accel))
    proc = _virt_xml_validate(f)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_virt_xml_validate_is_not_a_rubber_stamp(tmp_path: Path) -> None:
    f = tmp_path / "domain.xml"
    f.write_text(_broken(_xml()))
    assert _virt_xml_validate(f).returncode != 0


@pytest.mark.parametrize("accel", ["tcg", "kvm"])
def test_relaxng_schema_accepts_it(accel: str) -> None:
    schema = etree.RelaxNG(etree.parse(str(SCHEMA)))
    doc = etree.fromstring(_xml(accel).encode())
    assert schema.validate(doc), schema.error_log
    broken = etree.fromstring(_broken(_xml(accel)).encode())
    assert not schema.validate(broken)


def _netdev(root: ET.Element) -> list[str]:
    values = [a.get("value") or "" for a in root.iter(f"{{{QEMU_NS}}}arg")]
    return values


@pytest.mark.parametrize("port", [2222, 40022, 65000])
def test_nic_is_user_mode_with_ssh_forwarded_on_loopback_only(port: int) -> None:
    root = ET.fromstring(_xml(port=port))
    # Never a libvirt <interface>: no bridged or NAT network can be attached.
    assert root.find(".//interface") is None
    assert root.find(".//devices/interface") is None

    args = _netdev(root)
    assert args == [
        "-netdev",
        f"user,id=baker0,restrict=on,hostfwd=tcp:127.0.0.1:{port}-:22",
        "-device",
        "virtio-net-pci,netdev=baker0,bus=pci.0,addr=0x10",
    ]
    netdev = dict(opt.partition("=")[::2] for opt in args[1].split(",")[1:])
    assert args[1].split(",")[0] == "user"
    assert netdev["restrict"] == "on"
    forwards = [o for o in args[1].split(",") if o.startswith("hostfwd=")]
    assert forwards == [f"hostfwd=tcp:127.0.0.1:{port}-:22"]
    assert "guestfwd" not in args[1]


def test_oem_strings_are_present_and_escaped() -> None:
    text = _xml()
    assert "<&>" not in text  # escaped in the document...
    assert "&lt;&amp;&gt;" in text
    root = ET.fromstring(text)
    entries = [e.text for e in root.findall("./sysinfo[@type='smbios']/oemStrings/entry")]
    assert entries == OEM  # ...and the exact strings once parsed
    assert root.find("./os/smbios").get("mode") == "sysinfo"  # type: ignore[union-attr]


def test_domain_type_and_cpu_follow_the_accelerator() -> None:
    tcg = ET.fromstring(_xml("tcg"))
    kvm = ET.fromstring(_xml("kvm"))
    assert tcg.get("type") == "qemu"
    assert kvm.get("type") == "kvm"
    assert tcg.find("./cpu") is None
    assert kvm.find("./cpu").get("mode") == "host-passthrough"  # type: ignore[union-attr]


def test_resources_disk_and_console() -> None:
    root = ET.fromstring(_xml(memory_mib=1536, cpus=3, name="baker-x-1"))
    assert root.findtext("./name") == "baker-x-1"
    memory = root.find("./memory")
    assert memory is not None and memory.get("unit") == "MiB" and memory.text == "1536"
    assert root.findtext("./vcpu") == "3"
    (disk,) = root.findall("./devices/disk")
    assert disk.find("driver").get("type") == "qcow2"  # type: ignore[union-attr]
    assert disk.find("source").get("file") == "/var/tmp/baker-x/overlay.qcow2"  # type: ignore[union-attr]
    serial = root.find("./devices/serial[@type='file']/source")
    assert serial is not None and serial.get("path") == "/var/tmp/baker-x/console.log"
    assert root.findtext("./on_poweroff") == "destroy"


def test_paths_with_quotes_are_escaped() -> None:
    odd = Path("/var/tmp/it's <here>/overlay.qcow2")
    root = ET.fromstring(_xml(disk=odd))
    assert root.find("./devices/disk/source").get("file") == str(odd)  # type: ignore[union-attr]

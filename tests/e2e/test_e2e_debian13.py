"""Debian 13: the shipped recipe bakes and passes its tests; a build machine whose sshd was
provoked on purpose (many connections closed before a login, which OpenSSH >= 9.8 punishes
per source address) still lets the tests in; the published image keeps the package's sshd
configuration; a UEFI-only image on the shipped recipe's tree (taken from the step cache) builds
and boots (its measured boot)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import socket
import subprocess
import threading
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from support.bakerun import BAKER, ROOT, Baked, baker

from baker.inspect import disk

pytestmark = pytest.mark.e2e

PROVOCATIONS = 30


def test_the_shipped_debian_13_recipe_bakes_and_passes_its_tests(trixie_image: Baked) -> None:
    assert trixie_image.digest.startswith("sha256:")
    assert re.search(r"SSH answered after [\d.]+ s", trixie_image.stderr)
    cases = list(ET.parse(trixie_image.artifact / "verify.junit.xml").getroot().iter("testcase"))
    assert len(cases) == 5
    assert not [c for c in cases if c.find("failure") is not None or c.find("error") is not None]
    record = json.loads((trixie_image.artifact / "build.json").read_text())
    assert record["pins"]["base"]["suite"] == "trixie"
    assert record["tests"]["tests"] == 5 and record["tests"]["failures"] == 0


def test_the_published_image_keeps_the_packages_sshd_configuration(
    trixie_image: Baked, work_root: Path
) -> None:
    """What the build machine's sshd needed stays on the build machine: the image's
    sshd_config is the one openssh-server installs, and its only drop-in names the host keys
    the recipe asks for."""
    with disk.scratch(work_root) as work, contextlib.ExitStack() as stack:
        root = disk.open_image(trixie_image.artifact / "image.qcow2", "trixie", work, stack).root
        ssh_dir = root / "etc" / "ssh"
        packaged = root / "usr" / "share" / "openssh" / "sshd_config"
        assert (ssh_dir / "sshd_config").read_bytes() == packaged.read_bytes()
        assert sorted(p.name for p in (ssh_dir / "sshd_config.d").iterdir()) == ["host-keys.conf"]
        host_keys = (ssh_dir / "sshd_config.d" / "host-keys.conf").read_text().splitlines()
        assert host_keys and all(line.startswith("HostKey /etc/ssh/") for line in host_keys)
        found = subprocess.run(["grep", "-rli", "PerSourcePenalt", str(ssh_dir)],
                               capture_output=True, text=True, check=False)  # fmt: skip
        assert found.stdout == ""


TRIXIE = f"""\
name: debian-13-uefi
base:
  suite: trixie
  boot: uefi
provisioners:
  - name: motd
    inline: printf 'baked by baker (trixie)\\n' >/etc/motd
  # Holds the build until the test has made {PROVOCATIONS} connections that close before a
  # login (the kernel counts each one sshd accepted, however sshd treats or logs it), so the
  # tests log in after all of them.
  - name: provoked
    timeout_s: 300
    inline: |
      opens() {{ awk '$1 == "Tcp:" && $7 ~ /^[0-9]+$/ {{ print $7 }}' /proc/net/snmp; }}
      start=$(opens)
      echo "waiting for {PROVOCATIONS} connections"
      until [ $(( $(opens) - start )) -ge {PROVOCATIONS} ]; do sleep 1; done
tests:
  - path: testinfra/test_trixie.py
    sha256: {{sha256}}
boot_runs: 1
"""
TESTS = """\
def test_trixie(host):
    assert host.system_info.codename == "trixie"


def test_sshd_runs(host):
    assert host.service("ssh").is_running


def test_motd(host):
    assert "trixie" in host.file("/etc/motd").content_string
"""


def _provoke(port: int) -> int:
    """Connections that read sshd's banner and close without logging in (the penalty's
    "noauth" case); returns how many got a banner."""
    greeted = 0
    for _ in range(PROVOCATIONS):
        with (
            socket.create_connection(("127.0.0.1", port), timeout=30) as s,
            contextlib.suppress(OSError),
        ):
            greeted += s.recv(4) == b"SSH-"
    return greeted


def test_debian_13_provoked_sshd_uefi_only_on_the_shipped_tree(
    tmp_path: Path, work_root: Path, session_cache: Path
) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "testinfra").mkdir()
    tests = tmp_path / "images" / "testinfra" / "test_trixie.py"
    tests.write_text(TESTS)
    recipe = tmp_path / "images" / "debian-13-uefi.yaml"
    recipe.write_text(TRIXIE.replace("{sha256}", hashlib.sha256(TESTS.encode()).hexdigest()))
    out = tmp_path / "out"
    work = work_root / "debian-13-uefi"
    work.mkdir(mode=0o711)
    proc = subprocess.Popen(
        [str(BAKER), "build", str(recipe), "--out", str(out)],
        cwd=ROOT, env={**os.environ, "BAKER_WORK_DIR": str(work)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stderr is not None
    seen: list[str] = []
    port = None
    greeted: list[int] = []
    provoker = None
    for line in proc.stderr:
        seen.append(line)
        if found := re.search(r"SSH answered after [\d.]+ s on (\d+)", line):
            port = int(found.group(1))
        if f"waiting for {PROVOCATIONS} connections" in line and port is not None:
            provoker = threading.Thread(target=lambda p=port: greeted.append(_provoke(p)))
            provoker.start()
    stdout, _ = proc.communicate(timeout=60)
    if provoker is not None:
        provoker.join(timeout=60)
    stderr = "".join(seen)
    assert proc.returncode == 0, stderr[-4000:]
    assert greeted == [PROVOCATIONS], stderr[-4000:]  # every one of them reached sshd
    artifact = out / "debian-13-uefi"
    # The tests logged in after the provocation, and all passed.
    assert "3 passed" in stderr
    assert json.loads((artifact / "build.json").read_text())["tests"]["failures"] == 0
    record = json.loads((artifact / "build.json").read_text())
    assert record["pins"]["base"]["suite"] == "trixie" and record["image"]["boot"] == "uefi"
    # It boots: the measure step launched it in plain QEMU under OVMF, and SSH answered (a
    # boot of its own here would cost another minute under emulation and show no more).
    boots = json.loads((artifact / "boot.json").read_text())["firmware"]
    assert set(boots) == {"uefi"} and boots["uefi"]["each_run"][0]["time_to_ssh_s"] > 0
    cdx = json.loads((artifact / "sbom.cdx.json").read_text())
    purls = [c["purl"] for c in cdx["components"]]
    assert all("distro=debian-13" in p for p in purls)
    names = {c["name"] for c in cdx["components"]}
    assert {"shim-signed", "grub-efi-amd64-signed"} <= names
    # The packages are the shipped hybrid recipe's: its tree came from the step cache (or a
    # later step's output did), not from mmdebstrap again.
    assert record["steps"]["base"]["status"] in ("reused", "skipped")
    assert "mmdebstrap" not in stderr
    assert stdout.split()[-1].startswith("sha256:")
    with disk.scratch(work_root) as scratch, contextlib.ExitStack() as stack:
        root = disk.open_image(artifact / "image.qcow2", "uefi", scratch, stack).root
        assert 'VERSION_ID="13"' in (root / "usr/lib/os-release").read_text()
        assert "trixie" in (root / "etc/motd").read_text()
    # The OVA asks VMware for EFI firmware.
    converted = baker("convert", artifact, "--format", "ova", cache=session_cache, work=work_root)
    assert converted.returncode == 0
    ovf = subprocess.run(
        ["tar", "-xOf", str(artifact / "image.ova"), "debian-13-uefi.ovf"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert 'vmw:key="firmware" vmw:value="efi"' in ovf
    assert "<rasd:ResourceSubType>VmxNet3</rasd:ResourceSubType>" in ovf

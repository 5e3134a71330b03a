"""An EC2 build's evidence, against the moto server with a stand-in sshd for the instances:
the whole `build()` through the pipeline, its artifact verified with `baker verify`, its raw
digest against the blocks the test wrote into the AMI's snapshot, and `--live` failing once
one of those blocks is changed in the snapshot."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import subprocess
import sys
import tarfile
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.ec2_endpoint import DEBIAN, REGION, aws_env, client, moto_server, proxy, shared_proxy
from support.fake_sshd import FakeSshd
from support.recording_proxy import Call, Proxy

from baker import recipe
from baker.ami import live
from baker.build.options import Options
from baker.build.pipeline import build
from baker.cache import Cache
from baker.errors import BuildError
from baker.evidence import signing, verify
from baker.inspect import summary
from baker.progress import Reporter

__all__ = ["aws_env", "moto_server", "proxy", "shared_proxy"]  # fixtures

BLOCK = 512 * 1024
# What the test, playing the cloud, writes into the AMI's root snapshot: as if the instance's
# volume held these blocks, and zeros everywhere else.
WRITTEN = {0: b"\xeb\x63\x90" + bytes(BLOCK - 3), 7: b"baker" * (BLOCK // 5) + b"\0" * (BLOCK % 5),
           2049: bytes(range(256)) * (BLOCK // 256)}  # fmt: skip
DPKG = b"""Package: openssh-server
Status: install ok installed
Version: 1:9.2p1-2+deb12u3
Architecture: amd64

"""
DEP5 = b"""Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/

Files: *
License: BSD-2-clause
"""
STARTUP = b"Startup finished in 1.204s (kernel) + 6.710s (userspace) = 7.914s\n"
RECIPE = """\
name: ec2-evidence
backend:
  type: ec2
  region: {region}
  ami_filter: {{owner: "{owner}", name: "debian-12-amd64-*"}}
  ssh_host: 127.0.0.1
  ssh_port: {port}
  host_key_wait_s: 0
  ssh_timeout_s: 10
  root_volume_gib: 2
boot_budget_s: {{ec2: 600}}
provisioners:
  - name: motd
    inline: echo baked >/etc/motd
tests:
  - path: test_up.py
    sha256: {sha}
"""
TEST = b"def test_up(host):\n    assert host.run('true').rc == 0\n"


@pytest.fixture
def sshd() -> Iterator[FakeSshd]:
    server = FakeSshd()
    server.files["/var/lib/dpkg/status"] = (DPKG, 0o644)
    server.outputs.append(("systemd-analyze time", STARTUP))

    def respond(_user: str, command: str) -> int:
        if "baker-copyrights.tar" in command and "--create" in command:
            tar = io.BytesIO()
            with tarfile.open(fileobj=tar, mode="w") as t:
                text = DEP5
                info = tarfile.TarInfo("usr/share/doc/openssh-server/copyright")
                info.size = len(text)
                t.addfile(info, io.BytesIO(text))
            server.files["/run/baker-copyrights.tar"] = (tar.getvalue(), 0o600)
        return 0

    server.respond = respond
    yield server
    server.close()


def play_the_cloud(proxy: Proxy, sshd: FakeSshd, moto_url: str) -> None:
    """What AWS and cloud-init do that moto does not: an instance's login user takes the key
    pair in, and an image's root snapshot holds the instance's blocks (WRITTEN)."""

    def on_reply(call: Call, body: bytes) -> None:
        if call.action == "ImportKeyPair":
            sshd.allow("admin", base64.b64decode(call.params["PublicKeyMaterial"]).decode())
        elif call.action == "CreateImage":
            image_id = re.search(rb"<imageId>(ami-[0-9a-f]+)</imageId>", body)
            assert image_id is not None
            write_blocks(moto_url, image_id.group(1).decode(), WRITTEN)

    proxy.on_reply = on_reply


def write_blocks(moto_url: str, image_id: str, blocks: dict[int, bytes]) -> None:
    image = client("ec2", endpoint=moto_url).describe_images(ImageIds=[image_id])["Images"][0]
    snapshot = image["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"]
    for index, data in blocks.items():
        client("ebs", endpoint=moto_url).put_snapshot_block(
            SnapshotId=snapshot, BlockIndex=index, BlockData=data, DataLength=len(data),
            Checksum=base64.b64encode(hashlib.sha256(data).digest()).decode(),
            ChecksumAlgorithm="SHA256",
        )  # fmt: skip


def volume_digest(size: int, blocks: dict[int, bytes]) -> str:
    h = hashlib.sha256()
    zero = bytes(BLOCK)
    for index in range(size // BLOCK):
        h.update(blocks.get(index, zero))
    return f"sha256:{h.hexdigest()}"


def test_an_ec2_build_carries_evidence_that_verifies(
    aws_env: Proxy, sshd: FakeSshd, tmp_path: Path
) -> None:
    moto_url = urllib.parse.urlunsplit(("http", f"127.0.0.1:{aws_env.upstream.port}", "", "", ""))
    play_the_cloud(aws_env, sshd, moto_url)
    (tmp_path / "test_up.py").write_bytes(TEST)
    path = tmp_path / "ec2-evidence.yaml"
    path.write_text(RECIPE.format(region=REGION, owner=DEBIAN, port=sshd.port,
                                  sha=hashlib.sha256(TEST).hexdigest()))  # fmt: skip
    private, public = signing.keygen(tmp_path / "keys")
    opts = Options(out=tmp_path / "out", cache=Cache(tmp_path / "cache"), sign_key=private,
                   work_root=tmp_path / "work")  # fmt: skip
    result = build(recipe.load(path), opts, Reporter())

    artifact = result.artifact
    assert {p.name for p in artifact.iterdir()} == {
        "ami.json", "ami.json.sig", "build.json", "boot.json", "verify.junit.xml",
        "sbom.cdx.json", "sbom.spdx.json", "provenance.json", "provenance.dsse.json",
        "SHA256SUMS",
    }  # fmt: skip
    ami = json.loads((artifact / "ami.json").read_text())
    assert ami["raw_digest"] == volume_digest(ami["volume_size"], WRITTEN)
    assert ami["blocks_read"] == len(WRITTEN)
    findings = verify.verify(artifact, public)
    assert [f.name for f in findings if f.ok is not True] == ["live"], findings
    provenance = json.loads((artifact / "provenance.json").read_text())
    assert provenance["subject"] == [{"name": f"ec2:{REGION}:{ami['image_id']}",
                                      "digest": {"sha256": ami["raw_digest"][7:]}}]  # fmt: skip
    cdx = json.loads((artifact / "sbom.cdx.json").read_text())
    assert [c["name"] for c in cdx["components"]] == ["openssh-server"]
    assert "BSD-2-Clause" in json.dumps(cdx["components"][0].get("licenses"))

    boot = json.loads((artifact / "boot.json").read_text())
    assert boot["accel"] == "ec2" and boot["instance_type"] == "t3.micro"
    assert boot["image"] == ami["raw_digest"] and boot["kernel_s"] == 1.204
    assert 0 < boot["running_to_ssh_s"] <= boot["time_to_ssh_s"]
    assert boot["budget_s"] == 600 and boot["within_budget"] is True
    record = json.loads((artifact / "build.json").read_text())
    assert record["generalized"]["rules"][0] == "etc/ssh/ssh_host_*"
    root = [cmd for u, cmd in sshd.commands if u == "root"]
    generalized = next(i for i, c in enumerate(root) if "ssh_host_" in c)
    # cloud-init's clean, then the capture's rules, and the build's access revoked last.
    assert "cloud-init clean" in root[generalized - 1]
    assert "authorized_keys" in root[-1] and "ssh_host_" not in root[-1]
    # The boot's instance and its throwaway key pair are gone with the build's own.
    ec2 = client("ec2")
    running = ec2.describe_instances(
        Filters=[{"Name": "instance-state-name", "Values": ["pending", "running", "stopped"]},
                 {"Name": "tag:baker:recipe", "Values": ["ec2-evidence", "ec2-evidence-boot"]}]
    )["Reservations"]  # fmt: skip
    assert running == []
    pairs = [k["KeyName"] for k in ec2.describe_key_pairs()["KeyPairs"]]
    assert not [k for k in pairs if k.startswith("baker-ec2-evidence")]

    # `baker inspect` names the AMI and its raw digest.
    info = summary.summarize(artifact)
    assert (info["image"], info["digest"]) == (f"ec2:{REGION}:{ami['image_id']}", ami["raw_digest"])
    assert info["virtual_size_bytes"] == 2 << 30 and info["boot"]["accel"] == "ec2"

    # --live reads the snapshot back: the same digest, until a block in it changes.
    assert live.check(ami).endswith(ami["raw_digest"])
    findings = verify.verify(artifact, public, live=live.check)
    assert all(f.ok for f in findings), findings
    write_blocks(moto_url, ami["image_id"], {7: b"flipped!" * (BLOCK // 8)})
    with pytest.raises(BuildError, match="now hashes to"):
        live.check(ami)
    # As a user runs it: the offline checks hold, the live one fails, exit 1.
    proc = subprocess.run(
        [Path(sys.executable).with_name("baker"), "verify", artifact, "--pub", public, "--live"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    failed = [line for line in proc.stdout.splitlines() if not line.startswith("ok ")]
    assert proc.returncode == 1 and len(failed) == 1, proc.stdout + proc.stderr
    assert failed[0].startswith("FAIL live: ") and "now hashes to" in failed[0]

"""EC2 against moto, with real machines and images where moto has none.

The build: an ec2 recipe submitted to a farm (a real Redis on loopback) whose one worker has
the moto server's AWS credentials in its environment, so it serves the EC2 queue, and runs
`baker build` of the job through the pipeline. A published baker image
booted in bare qemu stands in for the instance, given an `admin` login user and a sudo the
way a cloud image has them, and takes the imported key pair from the API as cloud-init would.
The backend reaches it through ssh_host/ssh_port, takes root access with a real sshd drop-in,
the recipe's provisioner and testinfra tests run over the pinned connection exactly as in a
libvirt build, the machine is generalized and the build's access taken out again before the
image is made, and the image's measured launch reaches the same machine, given new host keys
the way a first boot makes them.

Publish: a real artifact's bytes, read back from the snapshot, are its raw disk."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import threading
import time
from pathlib import Path

import paramiko
import pytest
from support.bakerun import BAKER, ROOT, Baked
from support.ec2_endpoint import DEBIAN, REGION, aws_env, client, moto_server, proxy, shared_proxy
from support.farm import Redis, Worker
from support.recording_proxy import Call, Proxy

from baker import recipe
from baker.ami.publish import BLOCK, publish
from baker.backends import plainqemu as plainboot
from baker.backends.accel import choose
from baker.edge.aws import Aws
from baker.evidence import verify

pytestmark = pytest.mark.e2e
__all__ = ["aws_env", "moto_server", "proxy", "shared_proxy"]  # fixtures

RECIPE = """\
name: ec2-stand-in
variables:
  port: 22
backend:
  type: ec2
  region: {region}
  instance_type: t3.small
  ami_filter: {{owner: "{owner}", name: "debian-12-amd64-*"}}
  ssh_user: admin
  ssh_host: 127.0.0.1
  ssh_port: {{{{ port }}}}
  host_key_wait_s: 0
  ssh_timeout_s: 120
  root_volume_gib: 1
boot_runs: 1
boot_budget_s: {{ec2: 600}}
provisioners:
  - name: motd
    inline: |
      printf '%s\\n' "baked by baker (on ec2)" >/etc/motd
tests:
  - path: testinfra/test_base.py
    sha256: {test_sha}
"""

# What a Debian cloud image gives its login user, in this image that has neither cloud-init
# nor sudo: an `admin` who is root (uid 0), the build's key in its authorized_keys, and a
# `sudo -n` that runs the command.
STAND_IN = """set -e
useradd -o -u 0 -g 0 -M -d /home/admin -s /bin/sh admin
install -d -m 700 /home/admin/.ssh
printf '%s\\n' {key} >/home/admin/.ssh/authorized_keys
printf '#!/bin/sh\\n[ "$1" = -n ] && shift\\nexec "$@"\\n' >/usr/local/bin/sudo
chmod 755 /usr/local/bin/sudo
"""
# What a new instance of the AMI does at first boot, as far as the measurement's launch needs
# it: host keys of its own (the image has none), and the launch's key pair for `admin`.
FIRST_BOOT = """set -e
ssh-keygen -A
printf '%s\\n' {key} >>/home/admin/.ssh/authorized_keys
"""
# What the instance holds the moment it is asked to stop (before the image is made).
LOOK = (
    "ls /etc/ssh | grep -c '^ssh_host_' || true; stat -c %s /etc/machine-id; "
    "find /var/log -type f | wc -l; ls -A /tmp | wc -l"
)


@pytest.fixture(scope="module")
def stand_in_image(request: pytest.FixtureRequest) -> Path:
    """The session's freshly baked base image (other e2e tests bake it anyway), or, to run
    this file alone quickly, the published image $BAKER_E2E_BASE_IMAGE names."""
    given = os.environ.get("BAKER_E2E_BASE_IMAGE")
    if given:
        return Path(given)
    baked: Baked = request.getfixturevalue("base_image")
    return baked.artifact / "image.qcow2"


def test_an_ec2_job_through_the_farm(
    aws_env: Proxy, stand_in_image: Path, tmp_path: Path, work_root: Path
) -> None:
    """The whole `baker build` of an ec2 recipe, as a farm job: a worker whose environment
    has AWS credentials (the moto server's) serves the EC2 queue of its own accord, builds
    the job through the pipeline and stores its evidence; `submit --wait` gives the AMI. The
    stand-in plays cloud-init too: it takes the key pair baker imports from the API (as an
    instance's cloud-init takes it from the metadata service) and lets it in for `admin`."""
    work = work_root / "ec2-farm"
    work.mkdir(mode=0o711)
    (tmp_path / "redis").mkdir()
    (tmp_path / "artifacts").mkdir()
    redis = Redis(tmp_path / "redis")
    worker = Worker("ec2", redis.url, tmp_path / "artifacts", work, tmp_path / "worker.log")
    try:
        served = worker.output().split("baker: serving ", 1)[1].splitlines()[0].split(", ")
        assert "baker.ec2" in served, worker.output()[-3000:]
        with plainboot.boot(stand_in_image, tmp_path, choose("auto")) as vm:
            console_root, _ = vm.wait_for_ssh(180)
            artifact, digest = _through_the_farm(redis.url, vm.endpoint.port, console_root,
                                                 aws_env, tmp_path)  # fmt: skip
            assert digest.startswith(f"ec2:{REGION}:ami-")
            assert artifact == tmp_path / "artifacts" / "ec2-stand-in" / digest.replace(":", "-")
            assert {p.name for p in artifact.iterdir()} == {
                "ami.json", "build.json", "boot.json", "verify.junit.xml", "SHA256SUMS",
                "sbom.cdx.json", "sbom.spdx.json", "provenance.json",
            }  # fmt: skip
            boot = json.loads((artifact / "boot.json").read_text())
            assert boot["accel"] == "ec2" and boot["runs"] == 1
            assert boot["image"] == json.loads((artifact / "ami.json").read_text())["raw_digest"]
            assert boot["userspace_s"] > 0 and boot["time_to_ssh_s"] > 0
            assert [f.name for f in verify.verify(artifact, None) if f.ok is False] == []
            record = json.loads((artifact / "build.json").read_text())
            assert "/etc/ssh/ssh_host_ed25519_key" in record["generalized"]["removed"]
            assert record["tests"]["tests"] == 5 and record["tests"]["failures"] == 0
            assert record["ec2"]["host_key"]["fingerprint"] in vm.host_fingerprints()
            assert "openssh-server" in record["pins"]["packages"]
            ami = json.loads((artifact / "ami.json").read_text())
            image = client("ec2").describe_images(ImageIds=[ami["image_id"]])["Images"][0]
            assert {t["Key"]: t["Value"] for t in image["Tags"]}["baker:recipe"] == "ec2-stand-in"
            # The build's access is gone from the machine the image was made from.
            _, out, _ = console_root.exec_command("ls /etc/ssh/sshd_config.d 2>&1")
            assert "baker" not in out.read().decode()
    finally:
        worker.stop()
        redis.stop()
    # Nothing of the build is left in the account but the image, nor on the worker's host.
    ec2 = client("ec2")
    assert not [k for k in ec2.describe_key_pairs()["KeyPairs"]
                if k["KeyName"].startswith("baker-ec2-stand-in")]  # fmt: skip
    running = ec2.describe_instances(
        Filters=[{"Name": "instance-state-name", "Values": ["pending", "running"]}]
    )["Reservations"]
    assert running == []
    assert list(work.iterdir()) == []


def _through_the_farm(
    broker: str, port: int, console_root: paramiko.SSHClient, aws_env: Proxy, tmp_path: Path
) -> tuple[Path, str]:
    """Submit the stand-in's recipe and wait, playing the instance's cloud-init meanwhile;
    returns where the worker stored the artifact, and its digest."""
    recipe_file = _recipe(tmp_path, port)
    stop = threading.Event()

    def root(command: str) -> str:
        _, out, _ = console_root.exec_command(f"sh -c {shlex.quote(command)}")
        text = out.read().decode()
        assert out.channel.recv_exit_status() == 0, (command, text)
        return text

    def cloud_init() -> None:
        ec2 = client("ec2")
        seen: set[str] = set()
        while not stop.is_set():
            pairs = ec2.describe_key_pairs(IncludePublicKey=True)["KeyPairs"]
            for pair in pairs:
                name = pair["KeyName"]
                if not name.startswith("baker-ec2-stand-in") or name in seen:
                    continue
                seen.add(name)
                key = shlex.quote(pair["PublicKey"].strip())
                boot = name.startswith("baker-ec2-stand-in-boot")
                root((FIRST_BOOT if boot else STAND_IN).format(key=key))
            time.sleep(0.2)

    at_stop: list[str] = []

    def on_reply(call: Call, _body: bytes) -> None:
        if call.action == "StopInstances":
            at_stop.extend(root(LOOK).split())

    aws_env.on_reply = on_reply
    helper = threading.Thread(target=cloud_init, daemon=True)
    helper.start()
    try:
        submitted = subprocess.run(
            [str(BAKER), "submit", str(recipe_file), "--broker", broker, "--wait",
             "--var", f"port={port}", "--timeout", "20m"],
            cwd=tmp_path, capture_output=True, text=True, timeout=1500,
        )  # fmt: skip
    finally:
        stop.set()
        helper.join(30)
    assert submitted.returncode == 0, submitted.stderr[-3000:]
    # No worker-less notice: the worker took the EC2 queue of its own accord.
    assert "no worker listens" not in submitted.stderr
    name, digest = submitted.stdout.split()
    assert name == "ec2-stand-in"
    # Generalized before it stopped: no host keys, an empty machine id, no logs or
    # temporary files.
    assert at_stop == ["0", "0", "0", "0"]
    stored = re.search(r"stored at (\S+)", submitted.stderr)
    assert stored is not None, submitted.stderr[-3000:]
    return Path(stored.group(1)), digest


def test_publish_a_real_artifact(aws_env: Proxy, stand_in_image: Path, tmp_path: Path) -> None:
    """The bytes that reach the snapshot are the raw disk, and hash to the digest reported."""
    result = publish(stand_in_image.parent, REGION, aws=Aws(REGION), work_root=tmp_path)
    image = result.images[0]
    assert not image.reused
    ebs = client("ebs")
    (snapshot,) = image.snapshot_ids
    whole = hashlib.sha256()
    blocks = {
        b["BlockIndex"]: b["BlockToken"]
        for b in ebs.list_snapshot_blocks(SnapshotId=snapshot)["Blocks"]
    }
    raw = tmp_path / "check.raw"
    subprocess.run(["qemu-img", "convert", "-q", "-O", "raw", stand_in_image, raw], check=True)
    size = raw.stat().st_size
    with raw.open("rb") as f:
        for index in range(-(-size // BLOCK)):
            expected = f.read(BLOCK)
            if index in blocks:
                got = ebs.get_snapshot_block(
                    SnapshotId=snapshot, BlockIndex=index, BlockToken=blocks[index]
                )["BlockData"].read()[: len(expected)]
            else:
                got = bytes(len(expected))
            assert got == expected, f"block {index} differs"
            whole.update(got)
    assert f"sha256:{whole.hexdigest()}" == result.raw_digest
    assert len(blocks) < size // BLOCK  # the zero blocks were not sent
    again = publish(stand_in_image.parent, REGION, aws=Aws(REGION), work_root=tmp_path)
    assert again.images[0].reused and again.images[0].image_id == image.image_id


def _recipe(tmp: Path, port: int) -> Path:
    """The stand-in's recipe in a project of its own, its tests pinned."""
    tests = tmp / "testinfra"
    tests.mkdir()
    shutil.copy(ROOT / "images" / "testinfra" / "test_base.py", tests)
    sha = hashlib.sha256((tests / "test_base.py").read_bytes()).hexdigest()
    path = tmp / "ec2-stand-in.yaml"
    path.write_text(RECIPE.format(region=REGION, owner=DEBIAN, test_sha=sha))
    recipe.load(path, {"port": str(port)})  # as the worker will read it
    return path

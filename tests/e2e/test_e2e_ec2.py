"""EC2 against moto, with real machines and images where moto has none.

The build: a published baker image booted in bare qemu stands in for the instance, given an
`admin` login user and a sudo the way a cloud image has them. The backend reaches it through
ssh_host/ssh_port, takes root access with a real sshd drop-in, the recipe's provisioner and
testinfra tests run over the pinned connection exactly as in a libvirt build, and the build's
access is taken out again before the image is made.

Publish: a real artifact's bytes, read back from the snapshot, are its raw disk."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import paramiko
import pytest
from bakerun import ROOT, Baked

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ec2_fakes import (
    DEBIAN,
    NEW_BASE,
    REGION,
    Proxy,
    aws_env,
    client,
    moto_server,
    proxy,
    shared_proxy,
)

from baker import plainboot, provision, recipe, ssh, verify
from baker.accel import choose
from baker.backends.ec2 import TOFU, BuildTags, Ec2, login
from baker.buildrun import Options
from baker.ec2 import Aws
from baker.pipeline import build
from baker.progress import Reporter
from baker.publish_ec2 import BLOCK, publish

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


@pytest.fixture(scope="module")
def stand_in_image(request: pytest.FixtureRequest) -> Path:
    """The session's freshly baked base image (other e2e tests bake it anyway), or, to run
    this file alone quickly, the published image $BAKER_E2E_BASE_IMAGE names."""
    given = os.environ.get("BAKER_E2E_BASE_IMAGE")
    if given:
        return Path(given)
    baked: Baked = request.getfixturevalue("base_image")
    return baked.artifact / "image.qcow2"


def test_ec2_build_against_a_real_machine(
    aws_env: Proxy, stand_in_image: Path, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    keys = ssh.BuildKeys.generate()
    reporter = Reporter()
    with plainboot.boot(stand_in_image, work, choose("auto")) as vm:
        console_root, _ = vm.wait_for_ssh(180)
        _, out, err = console_root.exec_command(
            f"sh -c {shlex.quote(STAND_IN.format(key=shlex.quote(keys.client_public)))}"
        )
        assert out.channel.recv_exit_status() == 0, err.read()

        spec = _spec(tmp_path, vm.endpoint.port)
        backend_config = spec.recipe.backend
        build = BuildTags.new(spec.name, {"provision": "0" * 64})
        logs: list[str] = []
        machine = Ec2(backend_config, build, log=logs.append).start(keys)  # type: ignore[arg-type]
        try:
            assert machine.keys is not None and machine.host_key is not None
            # moto's console has no fingerprints: trusted on first use, and it is the key the
            # machine itself printed on its (real) console.
            assert machine.host_key.trust == TOFU
            assert machine.host_key.fingerprint in vm.host_fingerprints()

            # The pipeline's part, unchanged: root over the pinned connection.
            root, _ = ssh.wait_for_ssh(
                machine.endpoint,
                lambda: ssh.connect(
                    machine.endpoint, keys.client_key(), host_key=machine.keys.host_key()
                ),
                60,
                machine.alive,
                machine.console_tail,
            )
            provision.run_all(spec, root, reporter, 0)
            results = verify.run(
                spec, machine.endpoint, machine.keys, work, work / "junit.xml", reporter
            )
            assert results.tests == 5 and results.failures == 0

            machine.release_access(root)
            # The build's key opens nothing any more, as root or as admin.
            pinned = machine.keys.host_key()
            _refused(lambda: ssh.connect(machine.endpoint, keys.client_key(), host_key=pinned))
            # (Which key the machine shows does not matter here: only that the login fails.)
            _refused(
                lambda: login(
                    machine.endpoint, "admin", keys.client_key(), paramiko.AutoAddPolicy()
                )
            )
            _, out, _ = console_root.exec_command(
                "ls /etc/ssh/sshd_config.d /run/baker-ec2 2>&1; "
                "cat /home/admin/.ssh/authorized_keys"
            )
            left = out.read().decode()
            assert "00-baker-build.conf" not in left and "No such file" in left
            assert keys.client_public.split()[1] not in left

            machine.stop()
            ami = machine.create_image().as_json()
        finally:
            assert machine.destroy() == []
    assert ami["base_ami"]["image_id"] == NEW_BASE
    image = client("ec2").describe_images(ImageIds=[ami["image_id"]])["Images"][0]
    assert {t["Key"]: t["Value"] for t in image["Tags"]}["baker:recipe"] == "ec2-stand-in"


def test_baker_build_on_ec2(aws_env: Proxy, stand_in_image: Path, tmp_path: Path) -> None:
    """The whole `baker build` for an ec2 recipe, through the pipeline. The stand-in plays
    cloud-init too: it takes the key pair baker imports from the API (as an instance's
    cloud-init takes it from the metadata service) and lets it in for `admin`."""
    work = tmp_path / "work"
    work.mkdir()
    with plainboot.boot(stand_in_image, work, choose("auto")) as vm:
        console_root, _ = vm.wait_for_ssh(180)
        spec = _spec(tmp_path, vm.endpoint.port)
        stop = threading.Event()

        def cloud_init() -> None:
            ec2 = client("ec2")
            while not stop.is_set():
                pairs = ec2.describe_key_pairs(IncludePublicKey=True)["KeyPairs"]
                ours = [k for k in pairs if k["KeyName"].startswith("baker-ec2-stand-in")]
                if ours:
                    script = STAND_IN.format(key=shlex.quote(ours[0]["PublicKey"].strip()))
                    _, out, _ = console_root.exec_command(f"sh -c {shlex.quote(script)}")
                    out.channel.recv_exit_status()
                    return
                time.sleep(0.2)

        helper = threading.Thread(target=cloud_init, daemon=True)
        helper.start()
        try:
            result = build(spec, Options(out=tmp_path / "out", work_root=work), Reporter())
        finally:
            stop.set()
            helper.join(30)
        assert result.digest.startswith(f"ec2:{REGION}:ami-")
        artifact = result.artifact
        assert {p.name for p in artifact.iterdir()} == {
            "ami.json",
            "build.json",
            "verify.junit.xml",
            "SHA256SUMS",
        }
        record = json.loads((artifact / "build.json").read_text())
        assert record["tests"]["tests"] == 5 and record["tests"]["failures"] == 0
        assert record["ec2"]["host_key"]["fingerprint"] in vm.host_fingerprints()
        assert "openssh-server" in record["pins"]["packages"]
        ami = json.loads((artifact / "ami.json").read_text())
        image = client("ec2").describe_images(ImageIds=[ami["image_id"]])["Images"][0]
        assert {t["Key"]: t["Value"] for t in image["Tags"]}["baker:recipe"] == "ec2-stand-in"
        # The build's access is gone from the machine the image was made from.
        _, out, _ = console_root.exec_command("ls /etc/ssh/sshd_config.d 2>&1")
        assert "baker" not in out.read().decode()
    # Nothing of the build is left in the account but the image.
    ec2 = client("ec2")
    assert not [k for k in ec2.describe_key_pairs()["KeyPairs"]
                if k["KeyName"].startswith("baker-ec2-stand-in")]  # fmt: skip
    running = ec2.describe_instances(
        Filters=[{"Name": "instance-state-name", "Values": ["pending", "running"]}]
    )["Reservations"]
    assert running == []
    assert (work / "out").exists() is False
    assert [p for p in work.iterdir() if p.name.startswith("baker-")] == []


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


def _refused(attempt: Callable[[], paramiko.SSHClient]) -> None:
    """The login is refused, once sshd (reloading after the revocation) answers again."""
    deadline = time.monotonic() + 60
    while True:
        try:
            attempt().close()
        except paramiko.AuthenticationException:
            return
        except (paramiko.SSHException, OSError, EOFError):
            assert time.monotonic() < deadline, "sshd did not come back after the revocation"
            time.sleep(0.5)
            continue
        pytest.fail("the build's key still logs in after its access was released")


def _spec(tmp: Path, port: int) -> recipe.Spec:
    tests = tmp / "testinfra"
    tests.mkdir()
    shutil.copy(ROOT / "images" / "testinfra" / "test_base.py", tests)
    sha = hashlib.sha256((tests / "test_base.py").read_bytes()).hexdigest()
    path = tmp / "ec2-stand-in.yaml"
    path.write_text(RECIPE.format(region=REGION, owner=DEBIAN, test_sha=sha))
    return recipe.load(path, {"port": str(port)})

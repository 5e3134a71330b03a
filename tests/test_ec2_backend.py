"""The EC2 backend against a moto server over HTTP, with a stand-in sshd for the instance: the
whole call sequence of a build, and cleanup after every kind of failure, injected by real
means (a zero timeout, resources removed behind baker's back, a signal, the endpoint dying)."""

from __future__ import annotations

import http.server as http_server
import json
import os
import signal
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import paramiko
import pytest
from support.ec2_endpoint import (
    ACCESS_KEY,
    DEBIAN,
    NEW_BASE,
    OLD_BASE,
    REGION,
    SECRET_KEY,
    aws,
    aws_env,
    client,
    dying_proxy,
    moto_server,
    proxy,
    shared_proxy,
)
from support.fake_sshd import FakeSshd
from support.recording_proxy import Proxy

from baker.backends.base import BaseDisk, BuildLabel, CloudImage, SshTarget
from baker.backends.ec2 import BaseAmi, Ec2, Ec2Machine
from baker.backends.ec2.access import (
    CONSOLE,
    TOFU,
    as_cidr,
    console_fingerprints,
    decide_trust,
    grant_root_script,
    local_address,
    public_address,
    revoke_script,
)
from baker.backends.ec2.base import resolve_base
from baker.edge import ssh
from baker.edge.aws import Aws, AwsError, wait
from baker.edge.guest import SshGuest
from baker.errors import BakerError, BuildError, InputError
from baker.recipe.spec import Ec2Backend

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_ec2.type_defs import FilterTypeDef

__all__ = ["aws_env", "dying_proxy", "moto_server", "proxy", "shared_proxy"]  # fixtures

STEP_KEYS = {"base": "b" * 64, "provision": "c" * 64, "verify": "d" * 64}
# The EC2 backend keeps nothing of a machine locally: a work directory it must not touch.
NO_WORKDIR = Path("/nonexistent/baker-ec2-workdir")


@pytest.fixture
def sshd() -> Iterator[FakeSshd]:
    server = FakeSshd()
    yield server
    server.close()


def config(sshd: FakeSshd | None = None, **overrides: Any) -> Ec2Backend:
    values: dict[str, Any] = {
        "type": "ec2",
        "region": REGION,
        "instance_type": "t3.micro",
        "ami_filter": {"owner": DEBIAN, "name": "debian-12-amd64-*"},
        "ssh_host": "127.0.0.1",
        "ssh_port": sshd.port if sshd else 9,
        "host_key_wait_s": 0,
        "ssh_timeout_s": 10,
    }
    values.update(overrides)
    return Ec2Backend.model_validate(values)


class Run:
    """One build's backend, its keys, and what it logged."""

    def __init__(
        self, cfg: Ec2Backend, sshd: FakeSshd | None = None, own_aws: bool = False
    ) -> None:
        self.keys = ssh.BuildKeys.generate()
        self.build = BuildLabel.new("demo", STEP_KEYS)
        self.logs: list[str] = []
        self.backend = Ec2(cfg, aws=None if own_aws else aws(), log=self.logs.append)
        if sshd:
            sshd.allow(cfg.ssh_user, self.keys.client_public)

    def start(self) -> Ec2Machine:
        return self.backend.start(self.backend.resolve_base(), self.keys, NO_WORKDIR, self.build)


def ec2() -> EC2Client:
    return client("ec2")


def assert_clean(build: BuildLabel, keep_image: str | None = None) -> None:
    """Nothing of the build is left: no instance that is not terminated, no key pair or
    security group of its name, no image (but the finished one) or snapshot of its id."""
    c = ec2()
    by_build: list[FilterTypeDef] = [{"Name": "tag:baker:build", "Values": [build.build_id]}]
    reservations = c.describe_instances(Filters=by_build)["Reservations"]
    states = [i["State"]["Name"] for r in reservations for i in r["Instances"]]
    assert all(s == "terminated" for s in states), states
    pairs = c.describe_key_pairs()["KeyPairs"]
    assert build.name not in [k["KeyName"] for k in pairs]
    groups = c.describe_security_groups()["SecurityGroups"]
    assert build.name not in [g["GroupName"] for g in groups]
    images = c.describe_images(Owners=["self"], Filters=by_build)["Images"]
    assert [i["ImageId"] for i in images] == ([keep_image] if keep_image else [])
    kept = set()
    if keep_image:
        kept = {m["Ebs"]["SnapshotId"] for m in images[0]["BlockDeviceMappings"] if "Ebs" in m}
    snapshots = c.describe_snapshots(OwnerIds=["self"], Filters=by_build)["Snapshots"]
    assert {s["SnapshotId"] for s in snapshots} == kept


def finish(machine: Ec2Machine) -> dict[str, Any]:
    """What the pipeline does after start: a root session pinned to the host key, a command,
    stop (which releases the build's access), the image handed back. Returns ami.json."""
    guest = machine.connect(timeout=5)
    lines: list[str] = []
    code, tail = guest.run("echo provisioned", lines.append, timeout=10)
    assert code == 0 and tail == lines
    machine.stop(guest, timeout=1)
    image = machine.hand_back()
    assert isinstance(image, CloudImage)
    assert image.region == REGION and image.image_id == image.record["image_id"]
    assert image.ref == f"ec2:{REGION}:{image.image_id}"
    return image.record


# --- the whole build --------------------------------------------------------------------------


def test_build_call_sequence_tags_and_ami_json(aws_env: Proxy, sshd: FakeSshd) -> None:
    run = Run(config(sshd), sshd)
    machine = run.start()
    assert machine.endpoint == ssh.Endpoint("127.0.0.1", sshd.port)
    assert machine.name == run.build.name
    ami = finish(machine)
    machine.destroy()
    assert machine.leftovers == []

    assert aws_env.actions("ec2") == [
        "DescribeImages",  # the base: newest match of the filter
        "ImportKeyPair",
        "DescribeVpcs",
        "CreateSecurityGroup",
        "RunInstances",
        "DescribeInstances",  # waiter: running
        "AuthorizeSecurityGroupIngress",
        "GetConsoleOutput",  # host key fingerprints: none in moto's console
        "StopInstances",
        "DescribeInstances",  # waiter: stopped
        "CreateImage",
        "DescribeImages",  # waiter: available
        "DescribeImages",  # its snapshots, the root one read back through EBS for its digest
        "CreateTags",  # the image and its snapshots: the raw digest
        "DescribeInstances",  # cleanup: anything else of this build?
        "TerminateInstances",
        "DescribeInstances",  # waiter: terminated
        "DeleteKeyPair",
        "DescribeSecurityGroups",
        "DeleteSecurityGroup",
    ]
    assert aws_env.actions("ebs") == ["ListSnapshotBlocks"]  # moto's volume: all zeros
    calls = {c.action: c.params for c in aws_env.calls}
    run_params = calls["RunInstances"]
    assert run_params["ImageId"] == NEW_BASE  # the newer of the two Debian AMIs
    assert run_params["InstanceType"] == "t3.micro"
    assert run_params["KeyName"] == run.build.name
    assert run_params["ClientToken"] == run.build.build_id
    assert run_params["MetadataOptions.HttpTokens"] == "required"
    ingress = calls["AuthorizeSecurityGroupIngress"]
    assert ingress["IpPermissions.1.IpRanges.1.CidrIp"] == "127.0.0.1/32"
    assert ingress["IpPermissions.1.FromPort"] == "22"
    assert calls["ImportKeyPair"]["KeyName"] == run.build.name

    # The SSH side: first contact as admin, root access granted with sudo, then revoked.
    admin = sshd.executed("admin")
    assert admin[0] == "true"
    assert admin[1].startswith("sudo -n sh -c ")
    assert "authorized_keys.root" in admin[1]
    assert sshd.executed("root")[-1].startswith("sh -c ")
    assert "rm -f /etc/ssh/sshd_config.d/00-baker-build.conf" in sshd.executed("root")[-1]
    assert "root" in sshd.authorized and not sshd.authorized["root"]

    # ami.json, and the tags on the AMI and its snapshots.
    assert ami["region"] == REGION and ami["image_id"].startswith("ami-")
    assert ami["base_ami"]["image_id"] == NEW_BASE
    assert ami["base_ami"]["filter"] == {"owner": DEBIAN, "name": "debian-12-amd64-*"}
    json.dumps(ami)
    image = ec2().describe_images(ImageIds=[ami["image_id"]])["Images"][0]
    tags = {t["Key"]: t["Value"] for t in image["Tags"]}
    assert tags["baker:recipe"] == "demo"
    assert tags["baker:build"] == run.build.build_id
    assert tags["baker:key:provision"] == "c" * 64
    assert tags["baker:base-ami"] == NEW_BASE
    assert tags["baker:raw-digest"] == ami["raw_digest"]
    assert ami["root_snapshot_id"] in ami["snapshot_ids"]
    assert ami["block_size"] == 512 * 1024 and ami["volume_size"] % (1 << 30) == 0
    assert ami["blocks_read"] == 0
    snaps = ec2().describe_snapshots(SnapshotIds=ami["snapshot_ids"])["Snapshots"]
    assert snaps and all(
        {t["Key"]: t["Value"] for t in s["Tags"]}["baker:build"] == run.build.build_id
        for s in snaps
    )
    record = machine.record().fields
    assert record["host_key"] == {
        "fingerprint": sshd.host_key.fingerprint,
        "trust": TOFU,
    }
    assert any("trusting" in line and "first use" in line for line in run.logs)
    assert_clean(run.build, keep_image=ami["image_id"])


def test_pinned_ami_subnet_and_root_user(aws_env: Proxy, sshd: FakeSshd) -> None:
    subnet = ec2().describe_subnets()["Subnets"][0]["SubnetId"]
    run = Run(config(sshd, ami_filter=None, ami=OLD_BASE, subnet=subnet, ssh_user="root"), sshd)
    machine = run.start()
    ami = finish(machine)
    machine.destroy()
    params = {c.action: c.params for c in aws_env.calls}
    assert params["RunInstances"]["ImageId"] == OLD_BASE
    assert params["RunInstances"]["SubnetId"] == subnet
    assert "DescribeVpcs" not in aws_env.actions() and "DescribeSubnets" in aws_env.actions()
    # As root, no sudo.
    assert sshd.executed("root")[1].startswith("sh -c ")
    assert ami["base_ami"]["filter"] is None
    assert_clean(run.build, keep_image=ami["image_id"])


def test_the_pinned_root_login_refuses_another_host_key(aws_env: Proxy, sshd: FakeSshd) -> None:
    run = Run(config(sshd), sshd)
    machine = run.start()
    other = ssh.BuildKeys.generate()
    with pytest.raises(paramiko.BadHostKeyException):
        ssh.connect(machine.endpoint, run.keys.client_key(), host_key=other.host_key())
    machine.destroy()
    assert_clean(run.build)


def test_the_root_session_and_the_test_target(aws_env: Proxy, sshd: FakeSshd) -> None:
    run = Run(config(sshd), sshd)
    machine = run.start()
    target = machine.test_target()
    assert isinstance(target, SshTarget) and target.user == "root"
    assert target.endpoint == machine.endpoint
    assert target.keys.client_private == run.keys.client_private
    assert target.keys.host_key().fingerprint == sshd.host_key.fingerprint  # pinned
    assert target.keys.host_private == ""
    # The tests log in the way the target says, and nothing else gets in.
    ssh.connect(target.endpoint, target.keys.client_key(), host_key=target.keys.host_key()).close()

    guest = machine.connect(timeout=5)
    guest.upload(b"hello\n", "/etc/motd", 0o640)
    assert sshd.files["/etc/motd"] == (b"hello\n", 0o640)
    assert guest.read("/etc/motd") == b"hello\n"
    big = os.urandom(300_000)  # many SFTP reads' worth
    guest.upload(big, "/var/lib/dpkg/status", 0o644)
    assert guest.read("/var/lib/dpkg/status") == big
    with pytest.raises(BuildError, match="could not read /nope on the build machine"):
        guest.read("/nope")
    guest.close()
    guest.close()  # twice is fine
    machine.destroy()
    assert_clean(run.build)


def test_connect_waits_for_ssh_and_gives_up_after_its_timeout(
    aws_env: Proxy, sshd: FakeSshd
) -> None:
    run = Run(config(sshd), sshd)
    machine = run.start()
    # Root's access gone (as if the grant did not hold): every login is refused, and tried
    # again until the timeout.
    sshd.deny("root", run.keys.client_public)
    before = len(sshd.transports)
    with pytest.raises(BuildError, match=r"did not answer within 1 s \(Authentication failed"):
        machine.connect(timeout=1)
    assert len(sshd.transports) >= before + 2  # it kept trying
    machine.destroy()
    assert machine.leftovers == []
    assert_clean(run.build)


def test_backend_declarations_and_key_config(aws_env: Proxy) -> None:
    backend = Ec2(config(), aws=aws())
    assert (backend.kind, backend.starts_from, backend.hands_back) == (
        "ec2",
        "cloud",
        "cloud-image",
    )
    assert backend.key_config() == {
        "type": "ec2", "region": REGION, "instance_type": "t3.micro", "root_volume_gib": None
    }  # fmt: skip
    # Only what can change the image is in the key.
    other = Ec2(config(ssh_timeout_s=99, ssh_user="root", subnet="subnet-0abc12345"), aws=aws())
    assert other.key_config() == backend.key_config()
    assert Ec2(config(instance_type="t3.small"), aws=aws()).key_config() != backend.key_config()
    base = backend.resolve_base()
    assert isinstance(base, BaseAmi) and base == resolve_base(aws(), config())
    assert base.pin()["image_id"] == NEW_BASE


def test_start_refuses_a_local_disk(aws_env: Proxy, tmp_path: Path) -> None:
    run = Run(config())
    with pytest.raises(TypeError, match="starts from a BaseAmi"):
        run.backend.start(BaseDisk(tmp_path / "base.raw"), run.keys, tmp_path, run.build)
    assert aws_env.calls == []


def test_image_exists(aws_env: Proxy, sshd: FakeSshd) -> None:
    run = Run(config(sshd), sshd)
    machine = run.start()
    ami = finish(machine)
    machine.destroy()
    image = CloudImage(REGION, ami["image_id"], ami["raw_digest"], ami)
    assert run.backend.image_exists(image)
    unknown = CloudImage(REGION, "ami-0123456789abcdef0", "sha256:0", {})
    assert not run.backend.image_exists(unknown)
    ec2().deregister_image(ImageId=ami["image_id"])
    assert not run.backend.image_exists(image)
    # Not "gone": an error of another kind is the build's to report.
    with pytest.raises(BakerError, match=r"InvalidAMIID\.Malformed"):
        run.backend.image_exists(CloudImage(REGION, "nope", "sha256:0", {}))


def test_no_credentials_in_logs_errors_or_records(aws_env: Proxy, sshd: FakeSshd) -> None:
    run = Run(config(sshd, image_timeout_s=0), sshd)
    machine = run.start()
    with pytest.raises(BuildError) as failed:
        finish(machine)
    machine.destroy()
    seen = "\n".join([*run.logs, str(failed.value), json.dumps(machine.record().fields)])
    assert ACCESS_KEY not in seen and SECRET_KEY not in seen
    assert ACCESS_KEY not in json.dumps([c.params for c in aws_env.calls])


# --- the base AMI ------------------------------------------------------------------------------


def test_unknown_ami_and_unmatched_filter_are_input_errors(aws_env: Proxy) -> None:
    with pytest.raises(InputError, match=r"backend\.ami ami-0123456789abcdef0: no such image"):
        Run(config(ami_filter=None, ami="ami-0123456789abcdef0")).start()
    flt = {"owner": DEBIAN, "name": "debian-13-*"}
    with pytest.raises(InputError, match="no available x86_64 AMI owned by 136693071363"):
        Run(config(ami_filter=flt)).start()
    assert "ImportKeyPair" not in aws_env.actions()


def test_unknown_subnet_is_an_input_error_and_cleans_up(aws_env: Proxy) -> None:
    run = Run(config(subnet="subnet-0123456789abcdef0"))
    with pytest.raises(InputError, match=r"backend\.subnet subnet-0123456789abcdef0: no such"):
        run.start()
    assert "DeleteKeyPair" in aws_env.actions()
    assert_clean(run.build)


def test_no_image_while_the_build_key_has_root(aws_env: Proxy, sshd: FakeSshd) -> None:
    run = Run(config(sshd), sshd)
    machine = run.start()
    with pytest.raises(BuildError, match="root access is still in place: stop the machine first"):
        machine.hand_back()
    assert "CreateImage" not in aws_env.actions()
    machine.destroy()
    assert machine.leftovers == []
    assert_clean(run.build)


def test_a_failed_revoke_stops_nothing_and_makes_no_image(aws_env: Proxy, sshd: FakeSshd) -> None:
    sshd.respond = lambda user, cmd: 1 if user == "root" and "rm -f" in cmd else 0
    run = Run(config(sshd), sshd)
    machine = run.start()
    guest = machine.connect(timeout=5)
    with pytest.raises(BuildError, match="could not remove the build's access from i-"):
        machine.stop(guest, timeout=60)
    assert isinstance(guest, SshGuest) and guest.client.get_transport() is None  # closed
    assert "StopInstances" not in aws_env.actions()
    with pytest.raises(BuildError, match="stop the machine first"):
        machine.hand_back()
    machine.destroy()
    assert machine.leftovers == []
    assert_clean(run.build)


# --- cleanup after failures --------------------------------------------------------------------


def test_launch_timeout_zero_terminates_and_deletes(aws_env: Proxy) -> None:
    run = Run(config(launch_timeout_s=0))
    with pytest.raises(BuildError, match=r"to run: not done, and its timeout is 0 s"):
        run.start()
    assert "TerminateInstances" in aws_env.actions()
    assert_clean(run.build)


def test_ssh_never_answering_cleans_up(aws_env: Proxy) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    run = Run(config(ssh_port=port, ssh_timeout_s=0.5))
    with pytest.raises(BuildError, match=f"SSH on 127.0.0.1:{port} did not answer within"):
        run.start()
    assert_clean(run.build)


def test_no_passwordless_sudo_cleans_up(aws_env: Proxy, sshd: FakeSshd) -> None:
    sshd.respond = lambda user, cmd: 1 if cmd.startswith("sudo") else 0
    run = Run(config(sshd), sshd)
    with pytest.raises(BuildError, match="ssh_user admin needs passwordless sudo"):
        run.start()
    assert_clean(run.build)


def test_instance_terminated_behind_our_back_while_waiting_for_ssh(aws_env: Proxy) -> None:
    """A listener that, when baker first knocks, terminates the instance through the API and
    hangs up: baker sees the machine gone and cleans up the rest."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    run = Run(config(ssh_port=listener.getsockname()[1], ssh_timeout_s=30))

    def knock() -> None:
        conn, _ = listener.accept()
        c = ec2()
        tagged: list[FilterTypeDef] = [{"Name": "tag:baker:build", "Values": [run.build.build_id]}]
        for r in c.describe_instances(Filters=tagged)["Reservations"]:
            c.terminate_instances(InstanceIds=[i["InstanceId"] for i in r["Instances"]])
        conn.close()

    threading.Thread(target=knock, daemon=True).start()
    with pytest.raises(BuildError, match="the machine stopped before SSH answered"):
        run.start()
    listener.close()
    assert_clean(run.build)


def test_an_instance_terminated_while_waited_on_to_run_is_said_in_words(aws_env: Proxy) -> None:
    """A waiter that meets a failure state (the instance terminated before it ran) fails the
    wait at once with the waiter's reason, not with a crash in the error handling."""
    c = ec2()
    made = c.run_instances(ImageId=NEW_BASE, MinCount=1, MaxCount=1, InstanceType="t3.micro")
    instance = made["Instances"][0]["InstanceId"]
    c.terminate_instances(InstanceIds=[instance])
    with pytest.raises(AwsError, match=r"wait for it to run: .*terminated"):
        wait(c.get_waiter("instance_running"), 30, "wait for it to run", InstanceIds=[instance])


def test_interrupt_during_first_contact_cleans_up(aws_env: Proxy, sshd: FakeSshd) -> None:
    def interrupt(_user: str, command: str) -> int:
        if command == "true":
            os.kill(os.getpid(), signal.SIGINT)
        return 0

    sshd.respond = interrupt
    run = Run(config(sshd), sshd)
    with pytest.raises(KeyboardInterrupt):
        run.start()
    assert_clean(run.build)


def test_stop_timeout_zero_cleans_up(aws_env: Proxy, sshd: FakeSshd) -> None:
    run = Run(config(sshd, stop_timeout_s=0), sshd)
    machine = run.start()
    with pytest.raises(BuildError, match="to stop: not done"):
        finish(machine)
    machine.destroy()
    assert machine.leftovers == []
    assert_clean(run.build)


def test_image_timeout_zero_removes_the_half_made_ami(aws_env: Proxy, sshd: FakeSshd) -> None:
    run = Run(config(sshd, image_timeout_s=0), sshd)
    machine = run.start()
    with pytest.raises(BuildError, match="to become available: not done"):
        finish(machine)
    half_made = machine.made.image_id
    assert half_made is not None
    snapshots = [
        m["Ebs"]["SnapshotId"]
        for m in ec2().describe_images(ImageIds=[half_made])["Images"][0]["BlockDeviceMappings"]
    ]
    machine.destroy()
    assert machine.leftovers == []
    assert "DeregisterImage" in aws_env.actions() and "DeleteSnapshot" in aws_env.actions()
    assert (
        ec2().describe_images(Filters=[{"Name": "image-id", "Values": [half_made]}])["Images"] == []
    )
    left = ec2().describe_snapshots(OwnerIds=["self"])["Snapshots"]
    assert not {s["SnapshotId"] for s in left} & set(snapshots)
    assert any(f"deregistered half-made image {half_made}" in line for line in run.logs)
    assert_clean(run.build)


def test_resources_removed_behind_our_back_are_not_leftovers(
    aws_env: Proxy, sshd: FakeSshd
) -> None:
    run = Run(config(sshd), sshd)
    machine = run.start()
    made = machine.made
    assert made.instance_id and made.group_id and made.key_name
    c = ec2()
    c.terminate_instances(InstanceIds=[made.instance_id])
    c.delete_security_group(GroupId=made.group_id)
    c.delete_key_pair(KeyName=made.key_name)
    machine.destroy()
    assert machine.leftovers == []
    aws_env.clear()
    machine.destroy()  # twice is fine, and does nothing
    assert machine.leftovers == [] and aws_env.calls == []
    assert_clean(run.build)


def test_endpoint_dying_midway_reports_every_leftover_by_id(
    dying_proxy: Proxy, sshd: FakeSshd
) -> None:
    run = Run(config(sshd), sshd, own_aws=True)
    machine = run.start()
    dying_proxy.cut_at = lambda call: call.action == "StopInstances"
    with pytest.raises(BuildError, match="cannot reach the AWS API"):
        finish(machine)
    machine.destroy()
    left = machine.leftovers
    text = "\n".join(left)
    assert left and str(machine.made.instance_id) in text
    assert f"key pair {run.build.name}" in text
    assert "any security groups of build" in text or str(machine.made.group_id) in text
    assert all("cannot reach the AWS API" in item for item in left)
    assert sum("NOT cleaned up" in line for line in run.logs) == len(left)
    # What was reported is what is really still there (the endpoint died, not moto).
    direct = client("ec2", endpoint=dying_proxy.upstream.geturl())
    assert machine.made.instance_id is not None
    instance = direct.describe_instances(InstanceIds=[machine.made.instance_id])
    assert instance["Reservations"][0]["Instances"][0]["State"]["Name"] == "running"
    assert direct.describe_key_pairs(KeyNames=[run.build.name])["KeyPairs"]


# --- the parts on their own --------------------------------------------------------------------

CONSOLE_TEXT = """\
[   12.3] cloud-init[512]: Cloud-init v. 22.4.2 running 'modules:final'
ec2: #############################################################
ec2: -----BEGIN SSH HOST KEY FINGERPRINTS-----
ec2: 256 SHA256:kC0R3t8x9N6dFYyA+1LxZm0Fq2pQoW9b4l6v7H8s9jE root@ip-10-0-0-5 (ECDSA)
ec2: 256 SHA256:AbCdEfGhIjKlMnOpQrStUvWxYz0123456789+/abcde root@ip-10-0-0-5 (ED25519)
ec2: -----END SSH HOST KEY FINGERPRINTS-----
ec2: #############################################################
"""


def test_console_fingerprints() -> None:
    assert console_fingerprints(CONSOLE_TEXT) == {
        "SHA256:kC0R3t8x9N6dFYyA+1LxZm0Fq2pQoW9b4l6v7H8s9jE",
        "SHA256:AbCdEfGhIjKlMnOpQrStUvWxYz0123456789+/abcde",
    }
    assert console_fingerprints("Linux version 6.1\nlogin:") == set()


def test_trust_decision() -> None:
    key = ssh.private_key(ssh.generate_keypair("x")[0])
    printed = {key.fingerprint, "SHA256:other"}
    assert decide_trust(key, printed, "i-1").trust == CONSOLE
    assert decide_trust(key, set(), "i-1").trust == TOFU
    with pytest.raises(BuildError, match="refusing to trust it"):
        decide_trust(key, {"SHA256:other"}, "i-1")


def test_builder_addresses() -> None:
    assert as_cidr(local_address("127.0.0.1")) == "127.0.0.1/32"
    assert as_cidr("2001:db8::1") == "2001:db8::1/128"

    class CheckIp(http_server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"203.0.113.7\n"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: Any) -> None:
            pass

    server = http_server.HTTPServer(("127.0.0.1", 0), CheckIp)
    threading.Thread(target=server.handle_request, daemon=True).start()
    assert public_address(f"http://127.0.0.1:{server.server_address[1]}/") == "203.0.113.7"
    server.server_close()
    with pytest.raises(BuildError, match=r"set backend\.ssh_cidr"):
        public_address("http://127.0.0.1:9/", timeout=2)


def test_access_scripts_are_valid_shell(tmp_path: Path) -> None:
    keys = ssh.BuildKeys.generate()
    for script in (
        grant_root_script(keys.client_public),
        revoke_script(keys.client_public, "admin"),
    ):
        f = tmp_path / "s.sh"
        f.write_text(script)
        assert os.system(f"sh -n {f}") == 0
    assert keys.client_public in grant_root_script(keys.client_public)


def test_aws_client_uses_the_endpoint_and_profile(
    aws_env: Proxy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    creds = tmp_path / "credentials"
    creds.write_text(
        f"[baker-test]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\n"
    )
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(creds))
    monkeypatch.setenv("AWS_PROFILE", "baker-test")
    aws = Aws(REGION)
    assert aws.endpoint() == aws_env.url
    aws.ec2().describe_vpcs()
    assert aws_env.calls[-1].headers["authorization"].count(ACCESS_KEY) == 1
    with pytest.raises(InputError, match="could not read the AWS configuration"):
        Aws(REGION, profile="nope").ec2()


def test_missing_credentials_is_an_input_error(
    aws_env: Proxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(InputError, match="no AWS credentials found"):
        Run(config(), own_aws=True).start()

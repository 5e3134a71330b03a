"""The EC2 backend: a throwaway instance from a base AMI, reached over SSH like a libvirt
domain, and captured as a new AMI.

Everything it creates (key pair, security group, instance, image) is named and tagged for the
build, remembered the moment it exists, and removed by `destroy()` on every path; whatever
cannot be removed is reported with its id. Entry point: `Ec2(config, build).start(keys)`.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
import socket
import time
import urllib.request
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import paramiko

from baker.edge import ssh
from baker.edge.aws import (
    POLL_S,
    Aws,
    AwsError,
    Timeout,
    api,
    gone,
    image_snapshots,
    remove_image,
    retry,
    tag_spec,
    tags,
    wait,
)
from baker.edge.ssh import BuildKeys, Endpoint
from baker.errors import BakerError, BuildError, InputError
from baker.spec import Ec2Backend

CHECKIP_URL = "https://checkip.amazonaws.com"  # AWS's own what-is-my-address service
ACCESS_DIR = "/run/baker-ec2"  # a tmpfs: the build's root key never reaches the image
DROP_IN = "/etc/ssh/sshd_config.d/00-baker-build.conf"
TOFU = "trust-on-first-use"
CONSOLE = "console"

# cloud-init (and baker's own images) print these at first boot; on EC2 they reach the
# console output a while after sshd is up.
_FINGERPRINTS = re.compile(
    r"-----BEGIN SSH HOST KEY FINGERPRINTS-----(.*?)-----END SSH HOST KEY FINGERPRINTS-----",
    re.S,
)

Log = Callable[[str], None]


def _quiet(_message: str) -> None:
    pass


@dataclass(frozen=True)
class BuildTags:
    """What names and tags everything one build creates on AWS."""

    recipe: str
    build_id: str
    step_keys: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def new(cls, recipe: str, step_keys: Mapping[str, str] | None = None) -> BuildTags:
        return cls(recipe, uuid.uuid4().hex, dict(step_keys or {}))

    @property
    def name(self) -> str:
        """The key pair's, the security group's and the instance's name."""
        return f"baker-{self.recipe}-{self.build_id[:8]}"

    def tags(self) -> dict[str, str]:
        values = {"Name": self.name, "baker:recipe": self.recipe, "baker:build": self.build_id}
        values.update({f"baker:key:{step}": key for step, key in self.step_keys.items()})
        return values


@dataclass(frozen=True)
class BaseAmi:
    """The AMI a build starts from, as resolved: recorded in build.json as a pin."""

    region: str
    image_id: str
    name: str
    owner_id: str
    creation_date: str
    filter: dict[str, str] | None = None

    def pin(self) -> dict[str, Any]:
        return {
            "region": self.region,
            "image_id": self.image_id,
            "name": self.name,
            "owner_id": self.owner_id,
            "creation_date": self.creation_date,
            "filter": self.filter,
        }


@dataclass(frozen=True)
class HostKey:
    fingerprint: str
    trust: str  # CONSOLE: matched the fingerprints the instance printed; else TOFU

    def as_dict(self) -> dict[str, str]:
        return {"fingerprint": self.fingerprint, "trust": self.trust}


@dataclass(frozen=True)
class Ami:
    """The image a build made: what ami.json holds."""

    region: str
    image_id: str
    name: str
    snapshot_ids: tuple[str, ...]
    base: BaseAmi
    tags: dict[str, str]

    def as_json(self) -> dict[str, Any]:
        return {
            "region": self.region,
            "image_id": self.image_id,
            "name": self.name,
            "snapshot_ids": list(self.snapshot_ids),
            "base_ami": self.base.pin(),
            "tags": self.tags,
        }


def resolve_base(aws: Aws, config: Ec2Backend) -> BaseAmi:
    """The base AMI: the id given, checked, or the newest available match of the filter."""
    ec2 = aws.ec2()
    if config.ami:
        try:
            with api(f"look up backend.ami {config.ami}"):
                images = ec2.describe_images(ImageIds=[config.ami])["Images"]
        except AwsError as e:
            if not e.code.startswith("InvalidAMIID"):
                raise
            images = []
        if not images:
            raise InputError(f"backend.ami {config.ami}: no such image in {config.region}.")
        return _base(config.region, images[0], None)
    assert config.ami_filter is not None  # the spec requires one of the two
    flt = config.ami_filter
    with api(f"find the newest AMI owned by {flt.owner} named {flt.name}"):
        pages = ec2.get_paginator("describe_images").paginate(
            Owners=[flt.owner],
            Filters=[
                {"Name": "name", "Values": [flt.name]},
                {"Name": "state", "Values": ["available"]},
                {"Name": "architecture", "Values": ["x86_64"]},
            ],
        )
        images = [image for page in pages for image in page["Images"]]
    if not images:
        raise InputError(
            f"backend.ami_filter: no available x86_64 AMI owned by {flt.owner} is named "
            f"{flt.name} in {config.region}."
        )
    newest = max(images, key=lambda image: (image.get("CreationDate", ""), image["ImageId"]))
    return _base(config.region, newest, {"owner": flt.owner, "name": flt.name})


def _base(region: str, image: dict[str, Any], flt: dict[str, str] | None) -> BaseAmi:
    if image.get("State", "available") != "available":
        raise InputError(f"base AMI {image['ImageId']} is {image['State']}, not available.")
    return BaseAmi(
        region=region,
        image_id=image["ImageId"],
        name=image.get("Name", ""),
        owner_id=image.get("OwnerId", ""),
        creation_date=image.get("CreationDate", ""),
        filter=flt,
    )


def console_fingerprints(console: str) -> set[str]:
    """The SHA256 host key fingerprints a machine printed on its console (all blocks)."""
    found: set[str] = set()
    for block in _FINGERPRINTS.findall(console):
        found.update(re.findall(r"(SHA256:[A-Za-z0-9+/]+)", block))
    return found


def decide_trust(key: paramiko.PKey, printed: set[str], instance: str) -> HostKey:
    """A host key the console vouches for, or one trusted on first use when the console
    printed none; one the console contradicts is refused."""
    if not printed:
        return HostKey(key.fingerprint, TOFU)
    if key.fingerprint not in printed:
        raise BuildError(
            f"instance {instance} presented SSH host key {key.fingerprint}, but its console "
            f"lists {', '.join(sorted(printed))}: refusing to trust it (someone may be in "
            "between)."
        )
    return HostKey(key.fingerprint, CONSOLE)


def public_address(url: str = CHECKIP_URL, timeout: float = 10) -> str:
    """This machine's address as the internet sees it (what an instance's public IP sees)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            text = reply.read(100).decode(errors="replace").strip()
        return str(ipaddress.ip_address(text))
    except (OSError, ValueError) as e:
        raise BuildError(
            f"could not learn this machine's public address from {url} ({e}); set "
            "backend.ssh_cidr to the address range SSH may come from."
        ) from None


def local_address(host: str, port: int = 22) -> str:
    """The address this machine sends from toward `host` (a route lookup: no packet is sent)."""
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.connect((host, port))
            return str(s.getsockname()[0])
    except OSError as e:
        raise BuildError(f"no route from this machine to {host} ({e.strerror}).") from None


def as_cidr(address: str) -> str:
    ip = ipaddress.ip_address(address)
    return f"{ip}/{ip.max_prefixlen}"


class _Remember(paramiko.MissingHostKeyPolicy):
    """Accept the first contact's host key for now and keep it: whether to trust it is
    decided right after, against the instance's console, before anything is run."""

    def __init__(self) -> None:
        self.key: paramiko.PKey | None = None

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        self.key = key


def login(
    endpoint: Endpoint,
    user: str,
    pkey: paramiko.PKey,
    policy: paramiko.MissingHostKeyPolicy,
    timeout: float = 10,
) -> paramiko.SSHClient:
    return ssh.connect(endpoint, pkey, policy=policy, user=user, timeout=timeout)


# Debian names the unit ssh, others sshd; a socket-activated sshd reads its config per login.
_RELOAD_SSHD = (
    "for u in ssh sshd; do systemctl try-reload-or-restart $u 2>/dev/null && break; done; true"
)


def grant_root_script(public_key: str) -> str:
    """Shell (run as root) that lets the build's key log in as root until revoked: through a
    key file in /run and an sshd drop-in, so the image's own files are not touched."""
    return f"""set -e
grep -qsE '^[[:space:]]*Include[[:space:]]+/etc/ssh/sshd_config\\.d/' /etc/ssh/sshd_config || {{
  echo "/etc/ssh/sshd_config does not include /etc/ssh/sshd_config.d" >&2; exit 3; }}
umask 077
mkdir -p {ACCESS_DIR}
printf '%s\\n' {shlex.quote(public_key)} >{ACCESS_DIR}/authorized_keys.root
umask 022
cat >{DROP_IN} <<'EOF'
# Build-time only: baker removes it before the image is made.
PermitRootLogin prohibit-password
AuthorizedKeysFile {ACCESS_DIR}/authorized_keys.%u .ssh/authorized_keys .ssh/authorized_keys2
EOF
sshd -t 2>/dev/null || /usr/sbin/sshd -t
{_RELOAD_SSHD}
"""


def revoke_script(public_key: str, user: str) -> str:
    """Shell (run as root) that undoes grant_root_script and takes the build's key out of the
    login user's and root's authorized_keys (cloud-init put it there from the key pair)."""
    blob = public_key.split()[1]
    return f"""set -e
rm -f {DROP_IN}
rm -rf {ACCESS_DIR}
home=$(getent passwd {shlex.quote(user)} | cut -d: -f6)
for f in /root/.ssh/authorized_keys "$home/.ssh/authorized_keys"; do
  [ -f "$f" ] || continue
  grep -vF {shlex.quote(blob)} "$f" >"$f.baker" || true
  cat "$f.baker" >"$f"
  rm -f "$f.baker"
done
{_RELOAD_SSHD}
"""


_NOT_GONE = ["pending", "running", "stopping", "stopped"]


class Ec2Machine:
    """One build's instance and what was made for it; see `Ec2.start`."""

    def __init__(self, aws: Aws, config: Ec2Backend, build: BuildTags, log: Log) -> None:
        self.aws = aws
        self.ec2 = aws.ec2()
        self.config = config
        self.build = build
        self.log = log
        self.base: BaseAmi | None = None
        self.key_name: str | None = None
        self.group_id: str | None = None
        self.instance_id: str | None = None
        self.image_id: str | None = None
        self.image_done = False
        self.endpoint = Endpoint("", 0)
        self.keys: BuildKeys | None = None  # the build's keys, with the host key pinned
        self.host_key: HostKey | None = None
        self.leftovers: list[str] = []
        self.access_released = False
        self._destroyed = False
        self._state_seen: tuple[float, str] = (0.0, "")

    # --- launch ---------------------------------------------------------------------------

    def launch(self, keys: BuildKeys, base: BaseAmi) -> None:
        self.base = base
        self._import_key_pair(keys)
        self._create_security_group()
        self._run_instance(base)
        wait(
            self.ec2,
            "instance_running",
            self.config.launch_timeout_s,
            f"wait for instance {self.instance_id} to run",
            InstanceIds=[self.instance_id],
        )
        self.endpoint = self._endpoint()
        self._allow_ssh()
        client = self._first_contact(keys)
        try:
            self._grant_root(client, keys)
        finally:
            client.close()
        assert self.host_key is not None
        self.log(
            f"instance {self.instance_id} answers on {self.endpoint.host}:{self.endpoint.port} "
            f"(host key {self.host_key.fingerprint}, {self.host_key.trust})"
        )

    def _import_key_pair(self, keys: BuildKeys) -> None:
        # Named before the call: deleting a key pair by name is safe even if it never existed.
        self.key_name = self.build.name
        with api(f"import the build's key pair {self.key_name}"):
            self.ec2.import_key_pair(
                KeyName=self.key_name,
                PublicKeyMaterial=keys.client_public.encode(),
                TagSpecifications=[tag_spec("key-pair", self.build.tags())],
            )

    def _create_security_group(self) -> None:
        vpc = self._vpc()
        with api(f"create the build's security group {self.build.name}"):
            self.group_id = self.ec2.create_security_group(
                GroupName=self.build.name,
                Description=f"baker build {self.build.build_id}: SSH from the builder only",
                VpcId=vpc,
                TagSpecifications=[tag_spec("security-group", self.build.tags())],
            )["GroupId"]

    def _vpc(self) -> str:
        if self.config.subnet:
            try:
                with api(f"look up backend.subnet {self.config.subnet}"):
                    subnets = self.ec2.describe_subnets(SubnetIds=[self.config.subnet])["Subnets"]
            except AwsError as e:
                if not e.code.startswith("InvalidSubnetID"):
                    raise
                subnets = []
            if not subnets:
                raise InputError(
                    f"backend.subnet {self.config.subnet}: no such subnet in {self.config.region}."
                )
            return str(subnets[0]["VpcId"])
        with api("find the region's default VPC"):
            vpcs = self.ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])
        if not vpcs["Vpcs"]:
            raise InputError(
                f"{self.config.region} has no default VPC: give backend.subnet, a subnet to "
                "launch the build instance in."
            )
        return str(vpcs["Vpcs"][0]["VpcId"])

    def _run_instance(self, base: BaseAmi) -> None:
        params: dict[str, Any] = {
            "ImageId": base.image_id,
            "InstanceType": self.config.instance_type,
            "MinCount": 1,
            "MaxCount": 1,
            "KeyName": self.key_name,
            "SecurityGroupIds": [self.group_id],
            # A retried call must not start a second instance.
            "ClientToken": self.build.build_id,
            "InstanceInitiatedShutdownBehavior": "stop",
            "MetadataOptions": {"HttpTokens": "required", "HttpEndpoint": "enabled"},
            "TagSpecifications": [
                tag_spec("instance", self.build.tags()),
                tag_spec("volume", self.build.tags()),
            ],
        }
        if self.config.subnet:
            params["SubnetId"] = self.config.subnet
        with api(f"launch a {self.config.instance_type} instance from {base.image_id}"):
            reply = self.ec2.run_instances(**params)
        self.instance_id = reply["Instances"][0]["InstanceId"]
        self.log(f"launched {self.instance_id} ({self.config.instance_type}) from {base.image_id}")

    def _describe(self) -> dict[str, Any]:
        with api(f"describe instance {self.instance_id}"):
            reply = self.ec2.describe_instances(InstanceIds=[self.instance_id])
        return dict(reply["Reservations"][0]["Instances"][0])

    def _endpoint(self) -> Endpoint:
        if self.config.ssh_host:
            return Endpoint(self.config.ssh_host, self.config.ssh_port)
        instance = self._describe()
        if self.config.ssh_interface == "private_ip":
            address = instance.get("PrivateIpAddress")
        else:
            address = instance.get("PublicIpAddress")
        if not address:
            raise BuildError(
                f"instance {self.instance_id} has no {self.config.ssh_interface.replace('_', ' ')}"
                " address: give backend.subnet one that assigns public addresses, or set "
                "backend.ssh_interface: private_ip when this machine can reach the subnet."
            )
        return Endpoint(str(address), self.config.ssh_port)

    def _allow_ssh(self) -> None:
        cidr = self._builder_cidr()
        family = "Ipv6Ranges" if ":" in cidr else "IpRanges"
        key = "CidrIpv6" if ":" in cidr else "CidrIp"
        with api(f"allow SSH from {cidr} in {self.group_id}"):
            self.ec2.authorize_security_group_ingress(
                GroupId=self.group_id,
                IpPermissions=[
                    {
                        "IpProtocol": "tcp",
                        "FromPort": 22,
                        "ToPort": 22,
                        family: [{key: cidr, "Description": "the baker builder"}],
                    }
                ],
            )

    def _builder_cidr(self) -> str:
        if self.config.ssh_cidr:
            return self.config.ssh_cidr
        if self.config.ssh_host or self.config.ssh_interface == "private_ip":
            return as_cidr(local_address(self.endpoint.host, self.endpoint.port))
        return as_cidr(public_address())

    def _first_contact(self, keys: BuildKeys) -> paramiko.SSHClient:
        seen = _Remember()
        client, waited = ssh.wait_for_ssh(
            self.endpoint,
            lambda: login(self.endpoint, self.config.ssh_user, keys.client_key(), seen),
            self.config.ssh_timeout_s,
            self.alive,
            self.console_tail,
        )
        try:
            assert seen.key is not None
            self.host_key = self._trust(seen.key)
        except BaseException:
            client.close()
            raise
        self.keys = replace(
            keys, host_private="", host_public=f"{seen.key.get_name()} {seen.key.get_base64()}"
        )
        self.log(f"SSH answered after {waited:.1f} s as {self.config.ssh_user}")
        return client

    def _trust(self, key: paramiko.PKey) -> HostKey:
        """Check the host key against the fingerprints the instance prints on its console,
        waiting up to host_key_wait_s for them to appear there."""
        deadline = time.monotonic() + self.config.host_key_wait_s
        printed = console_fingerprints(self.console())
        while not printed and time.monotonic() < deadline:
            time.sleep(min(POLL_S, max(0.0, deadline - time.monotonic())))
            printed = console_fingerprints(self.console())
        decided = decide_trust(key, printed, str(self.instance_id))
        if decided.trust == TOFU:
            self.log(
                f"the console of {self.instance_id} shows no host key fingerprints; trusting "
                f"{key.fingerprint} on first use (recorded in build.json)"
            )
        return decided

    def _grant_root(self, client: paramiko.SSHClient, keys: BuildKeys) -> None:
        self._as_root(
            client, grant_root_script(keys.client_public), "give the build's key root access"
        )

    def _as_root(self, client: paramiko.SSHClient, script: str, what: str) -> None:
        user = self.config.ssh_user
        command = f"sh -c {shlex.quote(script)}"
        if user != "root":
            command = f"sudo -n {command}"
        code, tail = ssh.run(client, command, lambda line: None, timeout=120)
        if code != 0:
            last = " | ".join(line for line in tail[-5:] if line.strip()) or "no output"
            hint = f" (ssh_user {user} needs passwordless sudo)" if user != "root" else ""
            raise BuildError(f"could not {what} on {self.instance_id}{hint}: exit {code}: {last}")

    # --- the Machine interface --------------------------------------------------------------

    def state(self) -> str:
        if self.instance_id is None:
            return "none"
        instance = self._describe()
        state = str(instance["State"]["Name"])
        self._state_seen = (time.monotonic(), state)
        return state

    def alive(self) -> bool:
        """Whether the instance is pending or running, as AWS said at most POLL_S ago:
        wait_for_ssh asks after every refused attempt, four times a second."""
        seen_at, state = self._state_seen
        if not state or time.monotonic() - seen_at >= POLL_S:
            state = self.state()
        return state in ("pending", "running")

    def console(self) -> str:
        if self.instance_id is None:
            return ""
        try:
            with api(f"read the console of {self.instance_id}"):
                reply = self.ec2.get_console_output(InstanceId=self.instance_id)
        except BakerError as e:
            self.log(str(e))
            return ""
        return str(reply.get("Output") or "")

    def console_tail(self, lines: int = 15) -> str:
        kept = [line.strip() for line in self.console()[-8192:].splitlines() if line.strip()]
        return " | ".join(kept[-lines:]) or "(no console output)"

    def wait_stopped(self, timeout: float) -> bool:
        try:
            wait(
                self.ec2,
                "instance_stopped",
                timeout,
                f"wait for instance {self.instance_id} to stop",
                InstanceIds=[self.instance_id],
            )
        except Timeout:
            return False
        return True

    # --- after provisioning and tests -------------------------------------------------------

    def release_access(self, client: paramiko.SSHClient) -> None:
        """Take the build's key and root access out of the instance (over the root session
        the pipeline has), so that the image carries neither; closes `client`."""
        assert self.keys is not None
        script = revoke_script(self.keys.client_public, self.config.ssh_user)
        try:
            code, tail = ssh.run(client, f"sh -c {shlex.quote(script)}", lambda _l: None, 120)
        finally:
            client.close()
        if code != 0:
            last = " | ".join(line for line in tail[-5:] if line.strip()) or "no output"
            raise BuildError(
                f"could not remove the build's access from {self.instance_id}: exit {code}: {last}"
            )
        self.access_released = True

    def stop(self) -> None:
        with api(f"stop instance {self.instance_id}"):
            self.ec2.stop_instances(InstanceIds=[self.instance_id])
        wait(
            self.ec2,
            "instance_stopped",
            self.config.stop_timeout_s,
            f"wait for instance {self.instance_id} to stop",
            InstanceIds=[self.instance_id],
        )

    def create_image(self, description: str = "") -> Ami:
        """The stopped instance's disk as a new AMI, available and tagged (with its
        snapshots) with the recipe, the build id and the step keys."""
        assert self.base is not None
        if not self.access_released:
            # An image made now would let the build's key in as root on every instance of it.
            raise BuildError("the build's root access is still in place: release_access first.")
        values = {**self.build.tags(), "baker:base-ami": self.base.image_id}
        with api(f"create an image of {self.instance_id}"):
            self.image_id = self.ec2.create_image(
                InstanceId=self.instance_id,
                Name=self.build.name,
                Description=description or f"baked by baker from {self.build.recipe}",
                NoReboot=True,  # it is stopped already
                TagSpecifications=[tag_spec("image", values)],
            )["ImageId"]
        self.log(f"creating {self.image_id} from {self.instance_id}")
        wait(
            self.ec2,
            "image_available",
            self.config.image_timeout_s,
            f"wait for image {self.image_id} to become available",
            ImageIds=[self.image_id],
        )
        snapshots = tuple(sorted(image_snapshots(self.ec2, self.image_id)))
        with api(f"tag the snapshots of {self.image_id}"):
            if snapshots:
                self.ec2.create_tags(Resources=list(snapshots), Tags=tags(values))
        self.image_done = True
        return Ami(self.config.region, self.image_id, self.build.name, snapshots, self.base, values)

    def record(self) -> dict[str, Any]:
        """What build.json records of this machine."""
        return {
            "region": self.config.region,
            "instance_type": self.config.instance_type,
            "instance_id": self.instance_id,
            "base_ami": self.base.pin() if self.base else None,
            "host_key": self.host_key.as_dict() if self.host_key else None,
        }

    # --- cleanup ----------------------------------------------------------------------------

    def destroy(self) -> list[str]:
        """Terminate the instance, delete the key pair and the security group, and deregister
        a half-made image with its snapshots. Never raises: returns (and logs) what could not
        be removed, with ids. Safe to call twice."""
        if self._destroyed:
            return self.leftovers
        self._destroyed = True
        terminated = self._terminate()
        self._delete_key_pair()
        self._delete_security_group(retry_s=120 if terminated else 0)
        if not self.image_done:
            self._remove_half_made_images()
        for item in self.leftovers:
            self.log(f"NOT cleaned up: {item}; remove it by hand")
        return self.leftovers

    def _leftover(self, what: str, error: BaseException) -> None:
        self.leftovers.append(f"{what} ({error})")

    def _found(self, what: str, call: Callable[[], list[str]]) -> list[str]:
        try:
            with api(f"look for the build's {what}"):
                return call()
        except BakerError as e:
            self._leftover(f"any {what} of build {self.build.build_id}", e)
            return []

    def _terminate(self) -> bool:
        known = [self.instance_id] if self.instance_id else []
        ids = sorted(set(known) | set(self._found("instances", self._tagged_instances)))
        if not ids:
            return True
        try:
            with api(f"terminate {', '.join(ids)}"):
                self.ec2.terminate_instances(InstanceIds=ids)
            wait(
                self.ec2,
                "instance_terminated",
                max(self.config.stop_timeout_s, 60),
                f"wait for {', '.join(ids)} to terminate",
                InstanceIds=ids,
            )
        except BakerError as e:
            if gone(e):
                return True
            for instance in ids:
                self._leftover(f"instance {instance}", e)
            return False
        self.log(f"terminated {', '.join(ids)}")
        return True

    def _tagged_instances(self) -> list[str]:
        reply = self.ec2.describe_instances(
            Filters=[
                {"Name": "tag:baker:build", "Values": [self.build.build_id]},
                {"Name": "instance-state-name", "Values": _NOT_GONE},
            ]
        )
        return [i["InstanceId"] for r in reply["Reservations"] for i in r["Instances"]]

    def _delete_key_pair(self) -> None:
        if self.key_name is None:
            return
        try:
            with api(f"delete key pair {self.key_name}"):
                self.ec2.delete_key_pair(KeyName=self.key_name)
        except BakerError as e:
            self._leftover(f"key pair {self.key_name}", e)

    def _delete_security_group(self, retry_s: float) -> None:
        known = [self.group_id] if self.group_id else []
        ids = sorted(set(known) | set(self._found("security groups", self._named_groups)))
        for group in ids:
            try:
                retry(
                    f"delete security group {group}",
                    {"DependencyViolation"},
                    retry_s,
                    self.ec2.delete_security_group,
                    GroupId=group,
                )
            except BakerError as e:
                if not gone(e):
                    self._leftover(f"security group {group}", e)

    def _named_groups(self) -> list[str]:
        reply = self.ec2.describe_security_groups(
            Filters=[{"Name": "group-name", "Values": [self.build.name]}]
        )
        return [g["GroupId"] for g in reply["SecurityGroups"]]

    def _remove_half_made_images(self) -> None:
        known = [self.image_id] if self.image_id else []
        ids = sorted(set(known) | set(self._found("images", self._tagged_images)))
        for image in ids:
            snapshots = self._found("snapshots", lambda i=image: self._pending_snapshots(i))
            left = remove_image(self.ec2, image, snapshots)
            self.leftovers.extend(left)
            if not any(item.startswith(f"image {image} ") for item in left):
                self.log(f"deregistered half-made image {image}")

    def _tagged_images(self) -> list[str]:
        reply = self.ec2.describe_images(
            Owners=["self"], Filters=[{"Name": "tag:baker:build", "Values": [self.build.build_id]}]
        )
        return [i["ImageId"] for i in reply["Images"]]

    def _pending_snapshots(self, image_id: str) -> list[str]:
        """A pending image's snapshots, which its mappings may not name yet: found by the
        description AWS gives them."""
        if not self.instance_id:
            return []
        reply = self.ec2.describe_snapshots(
            OwnerIds=["self"],
            Filters=[
                {
                    "Name": "description",
                    "Values": [f"Created by CreateImage({self.instance_id}) for {image_id}*"],
                }
            ],
        )
        return [s["SnapshotId"] for s in reply["Snapshots"]]


class Ec2:
    """The EC2 backend. `start` launches and returns a machine the pipeline logs in to as
    root, like a libvirt domain; see the module docstring of baker.backends.ec2."""

    def __init__(
        self, config: Ec2Backend, build: BuildTags, *, aws: Aws | None = None, log: Log = _quiet
    ) -> None:
        self.config = config
        self.build = build
        self.aws = aws or Aws(config.region)
        self.log = log

    def resolve_base(self) -> BaseAmi:
        return resolve_base(self.aws, self.config)

    def start(self, keys: BuildKeys, base: BaseAmi | None = None) -> Ec2Machine:
        """Key pair, security group, instance; wait for it, reach it over SSH as ssh_user,
        check its host key, and let the build's key in as root. On any failure (Ctrl-C
        included) everything made so far is removed before the error goes on."""
        machine = Ec2Machine(self.aws, self.config, self.build, self.log)
        try:
            machine.launch(keys, base or self.resolve_base())
        except BaseException:
            machine.destroy()
            raise
        return machine

"""One EC2 build machine: launched with everything it needs (key pair, security group,
instance, root access for the build's key), then driven through the Machine interface of
baker.backends.base: a root session, a test target, a clean stop that takes the build's
access out again, and the stopped instance's disk handed back as a new AMI."""

from __future__ import annotations

import shlex
import time
from dataclasses import replace

import paramiko

from baker.ami.ebs import TAG_RAW, snapshot_digest
from baker.backends.base import BuildLabel, CloudImage, Guest, MachineRecord, SshTarget
from baker.backends.ec2.access import (
    HostKey,
    RememberHostKey,
    as_root,
    builder_cidr,
    grant_root_script,
    last_lines,
    login,
    revoke_script,
    trust_host_key,
)
from baker.backends.ec2.base import Ami, BaseAmi, Log, quiet
from baker.backends.ec2.cleanup import Resources, Teardown
from baker.backends.ec2.launch import (
    allow_ssh,
    create_security_group,
    describe_instance,
    import_key_pair,
    instance_endpoint,
    run_instance,
)
from baker.edge import ssh
from baker.edge.aws import (
    POLL_S,
    Aws,
    api,
    describe_image,
    root_snapshot,
    snapshots_of,
    tag_spec,
    tags,
    wait,
)
from baker.edge.guest import SshGuest
from baker.edge.ssh import BuildKeys, Endpoint
from baker.errors import BakerError, BuildError
from baker.recipe.spec import Ec2Backend

ROOT_SCRIPT_TIMEOUT_S = 120  # granting or revoking access: a file or two and an sshd reload


class Ec2Machine:
    """One build's instance and what was made for it; see `Ec2.start`. What was made is in
    `made` (ids), what `destroy()` could not remove in `leftovers`."""

    def __init__(self, aws: Aws, config: Ec2Backend, label: BuildLabel, log: Log = quiet) -> None:
        self.aws = aws
        self.ec2 = aws.ec2()
        self.config = config
        self.label = label
        self.name = label.name
        self.log = log
        self.made = Resources()
        self.base: BaseAmi | None = None
        self.endpoint = Endpoint("", 0)
        self.keys: BuildKeys | None = None  # the build's keys, with the host key pinned
        self.host_key: HostKey | None = None
        self.leftovers: list[str] = []
        self.access_released = False
        self._destroyed = False
        self._state_seen: tuple[float, str] = (0.0, "")
        self.times: dict[str, float] = {}

    # --- launch ---------------------------------------------------------------------------

    def launch(self, keys: BuildKeys, base: BaseAmi, *, root: bool = True) -> paramiko.SSHClient:
        """Key pair, security group, instance; wait for it, reach it over SSH as ssh_user,
        check its host key, and (with `root`) let the build's key in as root. Returns the
        first contact's session, as ssh_user. Whatever it made is in `made` even when it
        fails: the caller destroys the machine then. `times` has when the instance was asked
        for (RunInstances), seen running and answered SSH (monotonic seconds)."""
        self.base = base
        # Named before the call: deleting a key pair by name is safe even if it never existed.
        self.made.key_name = self.label.name
        import_key_pair(self.ec2, self.label, keys.client_public)
        self.made.group_id = group = create_security_group(self.ec2, self.config, self.label)
        self.times["launch"] = time.monotonic()
        self.made.instance_id = instance = run_instance(
            self.ec2, self.config, self.label, base, self.label.name, group
        )
        self.log(f"launched {instance} ({self.config.instance_type}) from {base.image_id}")
        wait(
            self.ec2.get_waiter("instance_running"),
            self.config.launch_timeout_s,
            f"wait for instance {instance} to run",
            InstanceIds=[instance],
        )
        self.times["running"] = time.monotonic()
        self.endpoint = instance_endpoint(self.ec2, self.config, instance)
        allow_ssh(self.ec2, group, builder_cidr(self.config, self.endpoint))
        client = self._first_contact(keys)
        try:
            if root:
                self._grant_root(client, keys)
        except BaseException:
            client.close()
            raise
        assert self.host_key is not None
        self.log(
            f"instance {instance} answers on {self.endpoint.host}:{self.endpoint.port} "
            f"(host key {self.host_key.fingerprint}, {self.host_key.trust})"
        )
        return client

    def _first_contact(self, keys: BuildKeys) -> paramiko.SSHClient:
        seen = RememberHostKey()
        client, waited = ssh.wait_for_ssh(
            self.endpoint,
            lambda sock: login(
                self.endpoint, self.config.ssh_user, keys.client_key(), seen, sock=sock
            ),
            self.config.ssh_timeout_s,
            self.alive,
            self.console_tail,
        )
        self.times["ssh"] = time.monotonic()
        try:
            assert seen.key is not None
            self.host_key = trust_host_key(
                seen.key, self.console, self.config.host_key_wait_s, self._instance, self.log
            )
        except BaseException:
            client.close()
            raise
        self.keys = replace(
            keys, host_private="", host_public=f"{seen.key.get_name()} {seen.key.get_base64()}"
        )
        self.log(f"SSH answered after {waited:.1f} s as {self.config.ssh_user}")
        return client

    def _grant_root(self, client: paramiko.SSHClient, keys: BuildKeys) -> None:
        user = self.config.ssh_user
        command = as_root(grant_root_script(keys.client_public), user)
        code, tail = ssh.run(client, command, quiet, timeout=ROOT_SCRIPT_TIMEOUT_S)
        if code != 0:
            hint = f" (ssh_user {user} needs passwordless sudo)" if user != "root" else ""
            raise BuildError(
                f"could not give the build's key root access on {self._instance}{hint}: "
                f"exit {code}: {last_lines(tail)}"
            )

    @property
    def _instance(self) -> str:
        return str(self.made.instance_id)

    def _pinned(self) -> BuildKeys:
        if self.keys is None:
            raise BuildError(f"the build machine {self.name} has not been reached over SSH yet.")
        return self.keys

    # --- the Machine interface ------------------------------------------------------------

    def connect(self, timeout: float) -> SshGuest:
        """A root session, logged in with the build's key (granted root at start) and only
        the host key the instance presented at first contact; waits up to `timeout` for
        SSH to answer, the way baker.edge.ssh.wait_for_ssh does."""
        keys = self._pinned()
        client, waited = ssh.wait_for_ssh(
            self.endpoint,
            lambda sock: ssh.connect(
                self.endpoint, keys.client_key(), host_key=keys.host_key(), timeout=10, sock=sock
            ),
            timeout,
            self.alive,
            self.console_tail,
        )
        self.log(f"SSH answered as root after {waited:.1f} s")
        return SshGuest(client)

    def test_target(self) -> SshTarget:
        return SshTarget(self.endpoint, self._pinned(), "root")

    def state(self) -> str:
        if self.made.instance_id is None:
            return "none"
        instance = describe_instance(self.ec2, self.made.instance_id)
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
        if self.made.instance_id is None:
            return ""
        try:
            with api(f"read the console of {self.made.instance_id}"):
                reply = self.ec2.get_console_output(InstanceId=self.made.instance_id)
        except BakerError as e:
            self.log(str(e))
            return ""
        return str(reply.get("Output") or "")

    def console_tail(self, lines: int = 15) -> str:
        kept = [line.strip() for line in self.console()[-8192:].splitlines() if line.strip()]
        return " | ".join(kept[-lines:]) or "(no console output)"

    def stop(self, guest: Guest, timeout: float) -> None:
        """Take the build's key and root access out of the instance through `guest` (the
        root session), so that the image carries neither; close `guest`; then stop the
        instance and wait for it to stop. `timeout` is ignored: the wait is bounded by
        backend.stop_timeout_s, the recipe's own limit for an EC2 stop."""
        script = revoke_script(self._pinned().client_public, self.config.ssh_user)
        try:
            code, tail = guest.run(f"sh -c {shlex.quote(script)}", quiet, ROOT_SCRIPT_TIMEOUT_S)
        finally:
            guest.close()
        if code != 0:
            raise BuildError(
                f"could not remove the build's access from {self._instance}: exit {code}: "
                f"{last_lines(tail)}"
            )
        self.access_released = True
        with api(f"stop instance {self._instance}"):
            self.ec2.stop_instances(InstanceIds=[self._instance])
        wait(
            self.ec2.get_waiter("instance_stopped"),
            self.config.stop_timeout_s,
            f"wait for instance {self._instance} to stop",
            InstanceIds=[self._instance],
        )

    def hand_back(self) -> CloudImage:
        """The stopped instance's disk as a new AMI, available and tagged (with its
        snapshots) with the recipe, the build id and the step keys; its record is what
        ami.json holds."""
        assert self.base is not None
        if not self.access_released:
            # An image made now would let the build's key in as root on every instance of it.
            raise BuildError("the build's root access is still in place: stop the machine first.")
        values = {**self.label.tags(), "baker:base-ami": self.base.image_id}
        with api(f"create an image of {self._instance}"):
            image_id = self.ec2.create_image(
                InstanceId=self._instance,
                Name=self.label.name,
                Description=f"baked by baker from {self.label.recipe}",
                NoReboot=True,  # it is stopped already
                TagSpecifications=[tag_spec("image", values)],
            )["ImageId"]
        self.made.image_id = image_id
        self.log(f"creating {image_id} from {self._instance}")
        wait(
            self.ec2.get_waiter("image_available"),
            self.config.image_timeout_s,
            f"wait for image {image_id} to become available",
            ImageIds=[image_id],
        )
        described = describe_image(self.ec2, image_id)
        snapshots = tuple(sorted(snapshots_of(described)))
        # The AMI's content digest: its root volume read back through the EBS direct API.
        root = root_snapshot(described, image_id)
        self.log(f"reading snapshot {root} of {image_id} back to hash its raw volume")
        digest = snapshot_digest(self.aws.ebs(), root, self.log)
        # Tagged like a published local image, so the two can be found by the same digest.
        values[TAG_RAW] = digest.raw_digest
        with api(f"tag {image_id} and its snapshots"):
            self.ec2.create_tags(Resources=[image_id, *snapshots], Tags=tags(values))
        self.made.image_done = True
        ami = Ami(
            self.config.region, image_id, self.label.name, snapshots, self.base, values, digest
        )
        return CloudImage(self.config.region, image_id, digest.raw_digest, ami.as_json())

    def record(self) -> MachineRecord:
        """What build.json records of this machine (its `ec2` section)."""
        return MachineRecord(
            {
                "region": self.config.region,
                "instance_type": self.config.instance_type,
                "instance_id": self.made.instance_id,
                "base_ami": self.base.pin() if self.base else None,
                "host_key": self.host_key.as_dict() if self.host_key else None,
            }
        )

    def destroy(self) -> None:
        """Terminate the instance, delete the key pair and the security group, and
        deregister a half-made image with its snapshots. Never raises: what could not be
        removed is logged and kept in `leftovers`, with ids. Safe to call twice."""
        if self._destroyed:
            return
        self._destroyed = True
        teardown = Teardown(self.ec2, self.label, self.made, self.config.stop_timeout_s, self.log)
        self.leftovers = teardown.run()

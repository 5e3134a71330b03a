"""What the EC2 tests talk to instead of AWS: a moto server on loopback (a real HTTP endpoint
that real boto3 calls), the fixtures that start it and put a recording proxy
(recording_proxy.py) in front of it, and the tests' own clients of it. The instance's sshd is
played by fake_sshd.py. Nothing here patches baker: baker is pointed at these through
AWS_ENDPOINT_URL and the recipe's ssh_host/ssh_port, as a user would point it at another
endpoint."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Literal, overload

import boto3
import pytest

from baker.edge import ssh
from baker.edge.aws import Aws

from .recording_proxy import Proxy

if TYPE_CHECKING:  # the boto3 stubs: types only
    from mypy_boto3_ebs import EBSClient
    from mypy_boto3_ec2 import EC2Client

DEBIAN = "136693071363"  # the account Debian publishes its AMIs from
OLD_BASE = "ami-0deb12a000000001"
NEW_BASE = "ami-0deb12a000000002"
ACCESS_KEY = "AKIABAKERTESTKEY0042"
SECRET_KEY = "bakerTestSecretKey/doNotPrintMe+0042"
REGION = "eu-west-1"

BASE_AMIS = [
    {
        "ami_id": ami,
        "name": name,
        "description": "Debian 12 (bookworm)",
        "owner_id": DEBIAN,
        "public": True,
        "virtualization_type": "hvm",
        "architecture": "x86_64",
        "state": "available",
        "creation_date": created,
        "root_device_type": "ebs",
        "root_device_name": "/dev/xvda",
    }
    for ami, name, created in (
        (OLD_BASE, "debian-12-amd64-20250101-1000", "2025-01-01T10:00:00.000Z"),
        (NEW_BASE, "debian-12-amd64-20250301-1100", "2025-03-01T11:00:00.000Z"),
    )
]


def free_port() -> int:
    return ssh.free_port()


# --- moto -----------------------------------------------------------------------------------


class MotoServer:
    """moto's server (moto_launch.py: with AWS's EBS direct reads of every snapshot) on a free
    loopback port, with only our two base AMIs loaded."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        amis = workdir / "amis.json"
        amis.write_text(json.dumps(BASE_AMIS))
        env = {**os.environ, "MOTO_AMIS_PATH": str(amis)}
        self.log = (workdir / "moto.log").open("wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).with_name("moto_launch.py")),
                "-H",
                "127.0.0.1",
                "-p",
                str(self.port),
            ],
            stdout=self.log,
            stderr=self.log,
            env=env,
        )
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{self.url}/moto-api/", timeout=1).close()
                return
            except OSError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.05)
        raise RuntimeError(f"moto server did not start: {(self.workdir / 'moto.log').read_text()}")

    def warm_up(self, region: str) -> None:
        """Have moto set the region up now (its default VPC, the AMIs), not in a test."""
        client("ec2", region, self.url).describe_vpcs()

    def reset(self) -> None:
        req = urllib.request.Request(f"{self.url}/moto-api/reset", method="POST", data=b"")
        urllib.request.urlopen(req, timeout=10).close()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    server = MotoServer(tmp_path_factory.mktemp("moto"))
    server.warm_up(REGION)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def shared_proxy(moto_server: MotoServer) -> Iterator[Proxy]:
    p = Proxy(moto_server.url)
    yield p
    p.close()


@pytest.fixture
def proxy(shared_proxy: Proxy) -> Proxy:
    # No moto reset between tests: moto takes a second to set a region up again, and every
    # test's resources are told apart by their build's own names and tags.
    shared_proxy.clear()
    return shared_proxy


@pytest.fixture
def dying_proxy(
    moto_server: MotoServer, aws_env: Proxy, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Proxy]:
    """A proxy of the test's own, which the test may have go dark."""
    p = Proxy(moto_server.url)
    monkeypatch.setenv("AWS_ENDPOINT_URL", p.url)
    yield p
    p.close()


@pytest.fixture
def aws_env(proxy: Proxy, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Proxy:
    """The environment a user would set to point AWS tools at another endpoint; dummy
    credentials, no shared files, no instance metadata lookups, no retries."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    return proxy


@overload
def client(
    service: Literal["ec2"], region: str = REGION, endpoint: str | None = None
) -> EC2Client: ...
@overload
def client(
    service: Literal["ebs"], region: str = REGION, endpoint: str | None = None
) -> EBSClient: ...
def client(
    service: Literal["ec2", "ebs"], region: str = REGION, endpoint: str | None = None
) -> EC2Client | EBSClient:
    """A plain boto3 client for the test's own looks at the server (and its own meddling)."""
    return _client(service, region, endpoint or os.environ["AWS_ENDPOINT_URL"])


@functools.cache
def _client(service: Literal["ec2", "ebs"], region: str, endpoint: str) -> EC2Client | EBSClient:
    # Clients are cached: making one costs a tenth of a second.
    return boto3.client(
        service,
        region_name=region,
        endpoint_url=endpoint,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
    )


@functools.cache
def shared_aws(endpoint: str) -> Aws:
    """One baker Aws for all tests on one endpoint (as one build or publish has one)."""
    return Aws(REGION)


def aws() -> Aws:
    return shared_aws(os.environ["AWS_ENDPOINT_URL"])

"""The verify step's testinfra host: it logs in with the build's keys, accepts only the
build machine's host key, and outlasts an sshd too slow to send its banner."""

from __future__ import annotations

from collections.abc import Iterator

import paramiko
import pytest
from support.fake_sshd import FakeSshd

from baker.edge import ssh, testinfra_host
from baker.edge.ssh import BuildKeys, Endpoint


@pytest.fixture
def sshd() -> Iterator[FakeSshd]:
    server = FakeSshd()
    yield server
    server.close()


def _keys(sshd: FakeSshd, host_public: str) -> BuildKeys:
    client_private, client_public = ssh.generate_keypair("test")
    sshd.allow("root", client_public)
    return BuildKeys(client_private, client_public, sshd.host_private, host_public)


def test_a_connection_closed_before_its_banner_is_tried_again(sshd: FakeSshd) -> None:
    sshd.drop_first = 2
    backend = testinfra_host.PinnedParamikoBackend(
        Endpoint("127.0.0.1", sshd.port), _keys(sshd, sshd.host_public), "root"
    )
    result = backend.run("echo hello")
    assert (result.rc, sshd.dropped) == (0, 2)
    assert sshd.executed("root")[-1].endswith("echo hello")


def test_a_wrong_host_key_is_refused_at_once(sshd: FakeSshd) -> None:
    _, other_public = ssh.generate_keypair("someone-else")
    backend = testinfra_host.PinnedParamikoBackend(
        Endpoint("127.0.0.1", sshd.port), _keys(sshd, other_public), "root"
    )
    with pytest.raises(paramiko.BadHostKeyException):
        backend.client  # noqa: B018 -- the property connects
    assert len(sshd.transports) == 1

"""pytest plugin for the verify step: testinfra's `host`, over this build's pinned SSH.

testinfra's own paramiko backend accepts any host key; this one accepts only the build's.
Loaded with `-p baker.build.steps.testinfra_plugin` (testinfra's own plugin disabled); it reads the
endpoint and keys from the BAKER_SSH_* variables the verify step sets.
"""

from __future__ import annotations

import functools
import json
import os

import paramiko
import pytest
import testinfra.host
from testinfra.backend.paramiko import ParamikoBackend

from baker.edge.ssh import BuildKeys, Endpoint, connect


class PinnedParamikoBackend(ParamikoBackend):
    def __init__(self, endpoint: Endpoint, keys: BuildKeys) -> None:
        super().__init__(f"paramiko://root@{endpoint.host}:{endpoint.port}")
        self._endpoint = endpoint
        self._keys = keys

    @functools.cached_property
    def client(self) -> paramiko.SSHClient:
        return connect(
            self._endpoint, self._keys.client_key(), host_key=self._keys.host_key(), timeout=30
        )


@pytest.fixture(scope="session")
def host() -> testinfra.host.Host:
    endpoint = Endpoint(os.environ["BAKER_SSH_HOST"], int(os.environ["BAKER_SSH_PORT"]))
    with open(os.environ["BAKER_SSH_KEYS"]) as f:
        keys = BuildKeys(**json.load(f))
    return testinfra.host.Host(PinnedParamikoBackend(endpoint, keys))

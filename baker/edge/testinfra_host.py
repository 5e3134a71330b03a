"""pytest plugin for the verify step: testinfra's `host`, bound to the build machine.

testinfra's own paramiko backend accepts any host key; this one accepts only the build's.
Loaded with `-p baker.edge.testinfra_host` (testinfra's own plugin disabled); it
reads the endpoint and keys from the BAKER_SSH_* variables the verify step sets, or, for
a machine reached otherwise (the fake backend), a testinfra host spec in
BAKER_TESTINFRA_HOST.
"""

from __future__ import annotations

import functools
import json
import os
import time

import paramiko
import pytest
import testinfra
import testinfra.host
from testinfra.backend.paramiko import ParamikoBackend

from baker.edge.ssh import BuildKeys, Endpoint, connect

CONNECT_PATIENCE_S = 120


class PinnedParamikoBackend(ParamikoBackend):  # type: ignore[misc]
    def __init__(self, endpoint: Endpoint, keys: BuildKeys, user: str) -> None:
        super().__init__(f"paramiko://{user}@{endpoint.host}:{endpoint.port}")
        self._endpoint = endpoint
        self._keys = keys
        self._user = user

    @functools.cached_property
    def client(self) -> paramiko.SSHClient:
        # The machine answered SSH moments ago, but on a host busy with other emulated
        # guests sshd's banner can miss a single attempt's timeout: try again, a wrong host
        # key excepted, before a test fails for it.
        deadline = time.monotonic() + CONNECT_PATIENCE_S
        while True:
            try:
                return connect(
                    self._endpoint,
                    self._keys.client_key(),
                    host_key=self._keys.host_key(),
                    user=self._user,
                    timeout=30,
                )
            except paramiko.BadHostKeyException:
                raise
            except (paramiko.SSHException, OSError, EOFError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(1.0)


@pytest.fixture(scope="session")
def host() -> testinfra.host.Host:
    if spec := os.environ.get("BAKER_TESTINFRA_HOST"):
        return testinfra.get_host(spec)
    endpoint = Endpoint(os.environ["BAKER_SSH_HOST"], int(os.environ["BAKER_SSH_PORT"]))
    with open(os.environ["BAKER_SSH_KEYS"]) as f:
        keys = BuildKeys.from_dict(json.load(f))
    return testinfra.host.Host(
        PinnedParamikoBackend(endpoint, keys, os.environ.get("BAKER_SSH_USER", "root"))
    )

"""What the EC2 tests talk to instead of AWS: a moto server on loopback (a real HTTP endpoint
that real boto3 calls), a recording proxy in front of it that can also go dark at a chosen
request (the endpoint dying mid-way), and a small SSH server standing in for an instance's
sshd. Nothing here patches baker: baker is pointed at these through AWS_ENDPOINT_URL and the
recipe's ssh_host/ssh_port, as a user would point it at another endpoint."""

from __future__ import annotations

import base64
import functools
import http.client
import http.server
import io
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import paramiko
import pytest

from baker.edge import ssh
from baker.edge.aws import Aws

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


# --- the recording, cuttable proxy ----------------------------------------------------------

_EBS_OPS = [
    ("POST", re.compile(r"^/snapshots$"), "StartSnapshot"),
    ("PUT", re.compile(r"^/snapshots/[^/]+/blocks/\d+$"), "PutSnapshotBlock"),
    ("POST", re.compile(r"^/snapshots/completion/[^/]+$"), "CompleteSnapshot"),
    ("GET", re.compile(r"^/snapshots/[^/]+/blocks$"), "ListSnapshotBlocks"),
    ("GET", re.compile(r"^/snapshots/[^/]+/blocks/\d+$"), "GetSnapshotBlock"),
]


@dataclass(frozen=True)
class Call:
    """One API request as it went over the wire."""

    service: str
    region: str
    action: str
    params: dict[str, str]
    path: str
    headers: dict[str, str]
    body: bytes = field(repr=False)


def _parse(method: str, path: str, headers: dict[str, str], body: bytes) -> Call:
    scope = re.search(
        r"Credential=[^/]+/\d+/([^/]+)/([^/]+)/aws4_request", headers.get("authorization", "")
    )
    region, service = (scope.group(1), scope.group(2)) if scope else ("", "")
    route = urllib.parse.urlsplit(path).path
    params: dict[str, str] = {}
    action = f"{method} {route}"
    if service == "ebs":
        action = next((op for m, rx, op in _EBS_OPS if m == method and rx.match(route)), action)
    elif body:
        params = {k: v[0] for k, v in urllib.parse.parse_qs(body.decode(errors="replace")).items()}
        action = params.get("Action", action)
    return Call(service, region, action, params, route, headers, body)


class Proxy(http.server.ThreadingHTTPServer):
    """Forwards every request to moto and records it; once `cut_at` matches a request, it
    answers nothing more and refuses connections, like an endpoint that died."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, upstream: str) -> None:
        super().__init__(("127.0.0.1", 0), _Forward)
        self.upstream = urllib.parse.urlsplit(upstream)
        self.calls: list[Call] = []
        self.cut_at: Callable[[Call], bool] | None = None
        # Called with each request and moto's reply before baker sees the reply: the cloud's
        # own doings that moto has no part of (cloud-init taking a key pair in, a snapshot
        # filled with the instance's blocks).
        self.on_reply: Callable[[Call, bytes], None] | None = None
        self.dark = threading.Event()
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def go_dark(self) -> None:
        self.dark.set()
        # Refuse new connections from now on, as a stopped server would.
        self.socket.close()

    def actions(self, service: str | None = None) -> list[str]:
        return [c.action for c in self.calls if service is None or c.service == service]

    def clear(self) -> None:
        self.calls.clear()
        self.cut_at = None
        self.on_reply = None

    def close(self) -> None:
        self.shutdown()
        self.server_close()


_HOP_BY_HOP = {"connection", "expect", "transfer-encoding", "content-length", "keep-alive"}


class _Forward(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Proxy

    def log_message(self, *_args: Any) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes: without this, Nagle's algorithm and the
        # client's delayed ACK add 40 ms to every call.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _handle(self) -> None:
        if self.server.dark.is_set():
            self.close_connection = True
            return
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        call = _parse(self.command, self.path, headers, body)
        with self.server.lock:
            cut = self.server.cut_at is not None and self.server.cut_at(call)
            if cut:
                self.server.go_dark()
            else:
                self.server.calls.append(call)
        if cut:
            self.close_connection = True
            return
        up = http.client.HTTPConnection(
            self.server.upstream.hostname, self.server.upstream.port, timeout=60
        )
        try:
            fwd = {
                k: v for k, v in self.headers.items() if k.lower() not in ("connection", "expect")
            }
            up.request(self.command, self.path, body=body, headers=fwd)
            reply = up.getresponse()
            data = reply.read()
        finally:
            up.close()
        if self.server.on_reply is not None and reply.status < 300:
            self.server.on_reply(call, data)
        self.send_response(reply.status, reply.reason)
        for key, value in reply.getheaders():
            if key.lower() not in (
                "transfer-encoding",
                "connection",
                "content-length",
                "date",
                "server",
            ):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle


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


def client(service: str, region: str = REGION, endpoint: str | None = None) -> Any:
    """A plain boto3 client for the test's own looks at the server (and its own meddling)."""
    return _client(service, region, endpoint or os.environ["AWS_ENDPOINT_URL"])


@functools.cache
def _client(service: str, region: str, endpoint: str) -> Any:
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


# --- a stand-in sshd ------------------------------------------------------------------------


class FakeSshd:
    """Public-key logins for the users and keys it is told; every command is recorded and
    answered by `respond` (exit 0 by default). It plays sshd's part in baker's root access:
    the grant script lets the build key in as root, the revoke script takes it out again."""

    def __init__(self) -> None:
        private, public = ssh.generate_keypair("fake-sshd")
        self.host_key = ssh.private_key(private)
        self.host_public = public
        self.authorized: dict[str, set[str]] = {}
        self.commands: list[tuple[str, str]] = []
        # Its file system, as far as SFTP sees it: path -> (contents, mode).
        self.files: dict[str, tuple[bytes, int]] = {}
        self.respond: Callable[[str, str], int] = lambda _user, _cmd: 0
        # What a command prints: the first (part of a command, output) that matches.
        self.outputs: list[tuple[str, bytes]] = []
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = int(self.sock.getsockname()[1])
        self.transports: list[paramiko.Transport] = []
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def allow(self, user: str, public_line: str) -> None:
        self.authorized.setdefault(user, set()).add(public_line.split()[1])

    def deny(self, user: str, public_line: str) -> None:
        self.authorized.get(user, set()).discard(public_line.split()[1])

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            t = paramiko.Transport(conn)
            t.add_server_key(self.host_key)
            t.set_subsystem_handler("sftp", paramiko.SFTPServer, _Sftp, self)
            self.transports.append(t)
            try:
                t.start_server(server=_Session(self))
            except (paramiko.SSHException, EOFError, OSError):
                t.close()

    def executed(self, user: str) -> list[str]:
        return [cmd for u, cmd in self.commands if u == user]

    def close(self) -> None:
        self._closed = True
        self.sock.close()
        for t in self.transports:
            t.close()


class _Session(paramiko.ServerInterface):
    def __init__(self, sshd: FakeSshd) -> None:
        self.sshd = sshd
        self.user = ""

    def get_allowed_auths(self, username: str) -> str:
        return "publickey"

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        if key.get_base64() in self.sshd.authorized.get(username, set()):
            self.user = username
            return paramiko.AUTH_SUCCESSFUL
        return paramiko.AUTH_FAILED

    def check_channel_request(self, kind: str, chanid: int) -> int:
        if kind == "session":
            return paramiko.OPEN_SUCCEEDED
        return paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
        text = command.decode()
        self.sshd.commands.append((self.user, text))
        threading.Thread(target=self._run, args=(channel, text), daemon=True).start()
        return True

    def _run(self, channel: paramiko.Channel, command: str) -> None:
        time.sleep(0.01)  # let the exec request's reply go out first
        code = self.sshd.respond(self.user, command)
        if code == 0:
            self._play_sshd(command)
            out = next((o for part, o in self.sshd.outputs if part in command), b"")
            if out:
                channel.sendall(out)
        channel.send_exit_status(code)
        channel.shutdown_write()
        channel.close()

    def _play_sshd(self, command: str) -> None:
        keys = re.findall(r"(ssh-ed25519 [A-Za-z0-9+/=]+)", command)
        if "authorized_keys.root" in command and keys:
            self.sshd.allow("root", keys[0])
        elif "sshd_config.d/00-baker-build.conf" in command and "rm -f" in command:
            blob = re.search(r"grep -vF '?([A-Za-z0-9+/=]+)", command)
            for users in self.sshd.authorized.values():
                if blob:
                    users.discard(blob.group(1))


class _Sftp(paramiko.SFTPServerInterface):
    """SFTP on the stand-in's in-memory files: whole-file reads and writes, and chmod (chattr)."""

    def __init__(self, server: paramiko.ServerInterface, sshd: FakeSshd) -> None:
        super().__init__(server)
        self.sshd = sshd

    def open(self, path: str, flags: int, attr: paramiko.SFTPAttributes) -> Any:
        if flags & (os.O_WRONLY | os.O_RDWR):
            mode = self.sshd.files.get(path, (b"", 0o644))[1]
            return _WriteHandle(self.sshd, path, mode, flags)
        if path not in self.sshd.files:
            return paramiko.SFTP_NO_SUCH_FILE
        return _ReadHandle(self.sshd.files[path][0], flags, self.stat(path))

    def chattr(self, path: str, attr: paramiko.SFTPAttributes) -> int:
        if path not in self.sshd.files:
            return paramiko.SFTP_NO_SUCH_FILE
        self.sshd.files[path] = (self.sshd.files[path][0], int(attr.st_mode or 0) & 0o7777)
        return paramiko.SFTP_OK

    def stat(self, path: str) -> Any:
        if path not in self.sshd.files:
            return paramiko.SFTP_NO_SUCH_FILE
        data, mode = self.sshd.files[path]
        attr = paramiko.SFTPAttributes()
        attr.st_size, attr.st_mode = len(data), 0o100000 | mode
        return attr

    lstat = stat


class _ReadHandle(paramiko.SFTPHandle):
    def __init__(self, data: bytes, flags: int, attr: paramiko.SFTPAttributes) -> None:
        super().__init__(flags)
        self.readfile = io.BytesIO(data)
        self.attr = attr

    def stat(self) -> paramiko.SFTPAttributes:
        return self.attr


class _WriteHandle(paramiko.SFTPHandle):
    def __init__(self, sshd: FakeSshd, path: str, mode: int, flags: int) -> None:
        super().__init__(flags)
        self.sshd, self.path, self.mode = sshd, path, mode
        self.writefile = io.BytesIO()

    def close(self) -> None:
        self.sshd.files[self.path] = (self.writefile.getvalue(), self.mode)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()

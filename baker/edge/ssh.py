"""SSH to the build machine (paramiko): ephemeral keys, a pinned host key, streamed commands."""

from __future__ import annotations

import base64
import dataclasses
import errno
import io
import logging
import select
import shlex
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from baker import interrupts
from baker.errors import BuildError

# paramiko logs every refused attempt with a traceback; while the guest boots those are
# expected, and a real failure is reported by wait_for_ssh itself.
logging.getLogger("paramiko").addHandler(logging.NullHandler())
logging.getLogger("paramiko").propagate = False


def generate_keypair(comment: str) -> tuple[str, str]:
    """A fresh ed25519 key pair: (OpenSSH private key text, authorized_keys line)."""
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
    return private, f"{public} {comment}"


def private_key(text: str) -> paramiko.PKey:
    return paramiko.Ed25519Key(file_obj=io.StringIO(text))


@dataclass(frozen=True)
class BuildKeys:
    """One build's keys: root's login key and the guest's host key, both thrown away after."""

    client_private: str
    client_public: str
    host_private: str
    host_public: str

    @classmethod
    def generate(cls) -> BuildKeys:
        client_private, client_public = generate_keypair("baker-build")
        host_private, host_public = generate_keypair("baker-build-host")
        return cls(client_private, client_public, host_private, host_public)

    def client_key(self) -> paramiko.PKey:
        return private_key(self.client_private)

    def host_key(self) -> paramiko.PKey:
        kind, blob = self.host_public.split()[:2]
        return paramiko.PKey.from_type_string(kind, base64.b64decode(blob))

    def oem_strings(self) -> list[str]:
        """What the guest's baker-build-access unit reads from SMBIOS (see baker/guest)."""
        host = base64.b64encode(self.host_private.encode()).decode()
        return [f"baker.authorized_key={self.client_public}", f"baker.host_key={host}"]

    def as_dict(self) -> dict[str, str]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, str]) -> BuildKeys:
        return cls(d["client_private"], d["client_public"], d["host_private"], d["host_public"])

    def write_client_key(self, path: Path) -> Path:
        path.touch(mode=0o600)
        path.write_text(self.client_private)
        return path


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int


def free_port() -> int:
    """A loopback port free right now (a guest's forwarded SSH; the tests' servers)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Fingerprints(paramiko.MissingHostKeyPolicy):
    """Accept a host key only if its SHA256 fingerprint is one the machine printed on its own
    console: first contact with a fresh machine, checked instead of trusted."""

    def __init__(self, allowed: Callable[[], set[str]]) -> None:
        self.allowed = allowed

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        if key.fingerprint not in self.allowed():
            raise paramiko.SSHException(
                f"host key {key.fingerprint} of {hostname} is not among the fingerprints the "
                "machine printed on its console"
            )


def connect(
    endpoint: Endpoint,
    pkey: paramiko.PKey,
    *,
    host_key: paramiko.PKey | None = None,
    console_fingerprints: Callable[[], set[str]] | None = None,
    policy: paramiko.MissingHostKeyPolicy | None = None,
    user: str = "root",
    timeout: float = 10,
    sock: socket.socket | None = None,
) -> paramiko.SSHClient:
    """Log in as `user` with `pkey`, accepting only `host_key`, or else a key whose
    fingerprint the machine printed on its console, or else what `policy` decides; by
    default never an unchecked key. `sock`: a connection already open (answering())."""
    client = paramiko.SSHClient()
    if host_key is not None:
        name = endpoint.host if endpoint.port == 22 else f"[{endpoint.host}]:{endpoint.port}"
        client.get_host_keys().add(name, host_key.get_name(), host_key)
    if console_fingerprints is not None:
        policy = _Fingerprints(console_fingerprints)
    client.set_missing_host_key_policy(policy or paramiko.RejectPolicy())
    try:
        client.connect(
            endpoint.host,
            endpoint.port,
            username=user,
            pkey=pkey,
            allow_agent=False,
            look_for_keys=False,
            timeout=timeout,
            banner_timeout=timeout,
            auth_timeout=timeout,
            sock=sock,
        )
    except BaseException:
        client.close()
        if sock is not None:
            sock.close()
        raise
    return client


# A new connection attempt this often while earlier ones still wait: a SYN sent before the
# guest had its address may sit unanswered for seconds (slirp, cloud networks) while a newer
# one goes straight through.
PROBE_EVERY_S = 0.25
# But only this many wait at once, each for at least PROBE_PATIENCE_S: every waiting attempt
# reaches sshd the moment the guest's network comes up, sshd's banner can take a second or
# more under emulation, and each attempt closed unused counts against the source address.
# OpenSSH >= 9.8 (Debian 13, PerSourcePenalties) refuses every connection from an address
# that closed 15 s worth of them, and all connections through QEMU's user-mode network come
# from one address.
PROBE_KEEP = 3
PROBE_PATIENCE_S = 2.0
# Once the machine refuses an attempt its network is up: one attempt at a time then, each
# given this long for its banner.
PROBE_ANSWERED_WAIT_S = 5.0


def answering(
    endpoint: Endpoint, timeout: float, alive: Callable[[], bool]
) -> socket.socket | None:
    """A connection on which sshd has sent its banner (peeked, not read: paramiko reads it),
    or None after `timeout` seconds or once `alive()` says the machine stopped.

    Attempts overlap instead of waiting one by one (waiting out a banner timeout on a
    connection made too early cost up to its whole timeout on every boot), but only a few,
    none is cut short before its banner could arrive, and once the machine answers they go
    one at a time: the ones left unused must not provoke the server."""
    deadline = time.monotonic() + timeout
    pending: list[tuple[socket.socket, float]] = []  # each attempt and when it was made
    answered = False  # the machine refused an attempt: its network is up
    next_attempt = 0.0
    winner: socket.socket | None = None
    try:
        while winner is None and time.monotonic() < deadline:
            interrupts.check()
            now = time.monotonic()
            if now >= next_attempt:
                # Asked between attempts, not before the first (a cloud's answer costs a call).
                if next_attempt and not alive():
                    return None
                keep, patience = (
                    (1, PROBE_ANSWERED_WAIT_S) if answered else (PROBE_KEEP, PROBE_PATIENCE_S)
                )
                if len(pending) >= keep and now - pending[0][1] >= patience:
                    pending.pop(0)[0].close()
                if len(pending) < keep:
                    attempt = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                    attempt.setblocking(False)
                    if attempt.connect_ex((endpoint.host, endpoint.port)) in (
                        0,
                        errno.EINPROGRESS,
                    ):
                        pending.append((attempt, now))
                    else:
                        attempt.close()
                        answered = True
                next_attempt = now + PROBE_EVERY_S
            wait = max(0.0, min(next_attempt, deadline) - time.monotonic())
            socks = [attempt for attempt, _ in pending]
            ready, _, _ = select.select(socks, [], [], wait) if socks else ([], [], [])
            if not socks:
                time.sleep(wait)
            for attempt in ready:
                try:
                    head = attempt.recv(4, socket.MSG_PEEK)
                except OSError:
                    head = b""
                if head == b"SSH-":
                    winner = attempt
                    break
                if not b"SSH-".startswith(head) or not head:
                    # Refused, reset or not sshd: the machine's network answers now, and its
                    # sshd did not listen yet. The attempts still waiting were made before the
                    # network came up; a new one will be answered at once.
                    for waiting, _ in pending:
                        waiting.close()
                    pending = []
                    answered = True
                    break
    finally:
        for attempt, _ in pending:
            if attempt is not winner:
                attempt.close()
    if winner is not None:
        winner.setblocking(True)
    return winner


def wait_for_ssh(
    endpoint: Endpoint,
    login: Callable[[socket.socket], paramiko.SSHClient],
    timeout: float,
    alive: Callable[[], bool],
    console_tail: Callable[[], str],
) -> tuple[paramiko.SSHClient, float]:
    """Connect the moment sshd answers (no fixed boot wait): `login` is given a connection
    whose banner has arrived. Returns (client, seconds until the first command ran)."""
    start = time.monotonic()
    last_error = "no answer"
    while True:
        sock = answering(endpoint, max(0.0, timeout - (time.monotonic() - start)), alive)
        if sock is not None:
            try:
                client = login(sock)
                # A login is not enough: the first command proves the guest is usable.
                _, out, _ = client.exec_command("true", timeout=30)
                out.channel.recv_exit_status()
                return client, time.monotonic() - start
            except paramiko.BadHostKeyException as e:
                raise BuildError(
                    f"the machine at {endpoint.host}:{endpoint.port} presented host key "
                    f"{e.key.fingerprint}, not the expected one: refusing to connect."
                ) from None
            except (TimeoutError, paramiko.SSHException, OSError, EOFError) as e:
                sock.close()
                last_error = str(e) or type(e).__name__
        elapsed = time.monotonic() - start
        if not alive():
            raise BuildError(
                f"the machine stopped before SSH answered; its console ended with: {console_tail()}"
            )
        if elapsed > timeout:
            raise BuildError(
                f"SSH on {endpoint.host}:{endpoint.port} did not answer within {timeout:.0f} s "
                f"({last_error}); the console ended with: {console_tail()}"
            )
        time.sleep(PROBE_EVERY_S)


class ConnectionLost(BuildError):
    """The SSH connection went away while a command ran (the machine stopped, or its sshd)."""


def run(
    client: paramiko.SSHClient,
    command: str,
    on_line: Callable[[str], None],
    timeout: float,
    stdin: bytes = b"",
) -> tuple[int, list[str]]:
    """Run `command` with `stdin` as its input, handing each output line (stdout and stderr
    merged) to `on_line` as it arrives. Returns the exit status and the last lines;
    ConnectionLost if the connection drops before the command's exit status arrives."""
    transport = client.get_transport()
    if transport is None or not transport.is_active():
        raise ConnectionLost("the SSH connection to the build machine is gone.")
    try:
        chan = transport.open_session()
        chan.set_combine_stderr(True)
        chan.settimeout(1.0)
        chan.exec_command(command)
        if stdin:
            chan.sendall(stdin)
        chan.shutdown_write()
    except (paramiko.SSHException, OSError, EOFError) as e:
        raise ConnectionLost(f"the SSH connection to the build machine failed ({e}).") from None
    deadline = time.monotonic() + timeout
    buf = b""
    tail: list[str] = []

    def emit(raw: bytes) -> None:
        line = raw.decode(errors="replace").rstrip("\r")
        tail.append(line)
        del tail[:-20]
        on_line(line)

    while True:
        try:
            chunk = chan.recv(65536)
        except TimeoutError:
            chunk = None
        except (OSError, EOFError, paramiko.SSHException):
            chunk = b""  # the connection broke: what status there is says so below
        if chunk:
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                emit(line)
        elif chunk == b"" or (chan.exit_status_ready() and not chan.recv_ready()):
            break
        if time.monotonic() > deadline:
            chan.close()
            raise BuildError(f"`{_short(command)}` ran longer than {timeout:.0f} s.")
    if buf:
        emit(buf)
    # A connection that dies mid-command closes the channel without an exit status (a
    # command killed by a signal has none either, but its connection lives on).
    chan.status_event.wait(10)
    if chan.exit_status == -1 and not transport.is_active():
        raise ConnectionLost(
            f"the SSH connection to the build machine was lost while `{_short(command)}` ran."
        )
    return chan.recv_exit_status(), tail


def env_prefix(env: dict[str, str]) -> str:
    return " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(env.items()))


def _short(command: str) -> str:
    return command if len(command) < 60 else command[:57] + "..."

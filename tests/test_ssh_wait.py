"""wait_for_ssh and its probe: the first connection whose banner arrives is the one used, a
connection that never answers costs nothing, and a stopped machine or a timeout ends the wait
with one sentence."""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Iterator

import paramiko
import pytest

from baker.edge import ssh
from baker.errors import BuildError


class Listener:
    """A loopback port that accepts connections; answers with an SSH banner only once told."""

    def __init__(self) -> None:
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(64)
        self.port = int(self.server.getsockname()[1])
        self.answer = threading.Event()
        self.accepted: list[socket.socket] = []
        self.stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        self.server.settimeout(0.05)
        while not self.stop.is_set():
            try:
                conn, _ = self.server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted.append(conn)
            # Like a SYN that reached a guest without its address: accepted, never answered.
            if self.answer.is_set():
                conn.sendall(b"SSH-2.0-test\r\n")

    def close(self) -> None:
        self.stop.set()
        self.server.close()
        for conn in self.accepted:
            conn.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    server = Listener()
    yield server
    server.close()


def test_a_new_attempt_is_answered_while_an_early_one_hangs(listener: Listener) -> None:
    endpoint = ssh.Endpoint("127.0.0.1", listener.port)
    threading.Timer(0.6, listener.answer.set).start()
    started = time.monotonic()
    sock = ssh.answering(endpoint, 10, lambda: True)
    waited = time.monotonic() - started
    assert sock is not None
    try:
        assert sock.recv(4) == b"SSH-"  # peeked, not consumed
    finally:
        sock.close()
    # The attempts made before the answer are still open and silent; the probe did not wait
    # for any of them to give up.
    assert len(listener.accepted) >= 2
    assert waited < 5


def _open_ones(conns: list[socket.socket]) -> list[socket.socket]:
    """The connections the client has not closed (a closed one reads as EOF at once)."""
    still = []
    for conn in conns:
        conn.setblocking(False)
        try:
            if conn.recv(1, socket.MSG_PEEK) != b"":
                still.append(conn)
        except BlockingIOError:
            still.append(conn)
        except OSError:
            pass
    return still


class Guest:
    """A machine coming up behind QEMU's user-mode network, in phases: "silent" (its network
    is not up: an attempt is accepted by QEMU and waits), "refusing" (its network is up, its
    sshd not yet: an attempt is reset), "answering" (sshd runs: every waiting attempt and
    every new one gets a banner, as all of them reach sshd at once)."""

    def __init__(self) -> None:
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(64)
        self.port = int(self.server.getsockname()[1])
        self.phase = "silent"
        self.attempts = 0
        self.waiting: list[socket.socket] = []
        self.greeted: list[socket.socket] = []
        self.lock = threading.Lock()
        self.done = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        self.server.settimeout(0.02)
        while not self.done.is_set():
            try:
                conn, _ = self.server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self.lock:
                self.attempts += 1
                if self.phase == "refusing":
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    conn.close()
                elif self.phase == "answering":
                    self._greet(conn)
                else:
                    self.waiting.append(conn)

    def _greet(self, conn: socket.socket) -> None:
        self.greeted.append(conn)  # before the banner: the client may look at once
        try:
            conn.sendall(b"SSH-2.0-test\r\n")
        except OSError:
            conn.close()

    def to(self, phase: str) -> None:
        with self.lock:
            self.phase = phase
            if phase == "answering":
                # Only the attempts the client still holds reach sshd.
                for conn in _open_ones(self.waiting):
                    self._greet(conn)

    def close(self) -> None:
        self.done.set()
        self.server.close()
        for conn in self.waiting + self.greeted:
            conn.close()


@pytest.fixture
def guest() -> Iterator[Guest]:
    machine = Guest()
    yield machine
    machine.close()


def _probe(guest: Guest, phases: list[tuple[float, str]]) -> None:
    for delay, phase in phases:
        threading.Timer(delay, guest.to, (phase,)).start()
    sock = ssh.answering(ssh.Endpoint("127.0.0.1", guest.port), 10, lambda: True)
    assert sock is not None
    assert sock.recv(4) == b"SSH-"
    sock.close()
    with guest.lock:  # the phase change that greeted it is complete
        pass


def test_few_attempts_wait_at_once_so_few_reach_sshd_unused(guest: Guest) -> None:
    """When the machine's network comes up with sshd already listening, every waiting attempt
    reaches sshd at once, and each one closed unused counts against the one source address
    (OpenSSH's PerSourcePenalties: 15 of them lock every later login out for a while)."""
    _probe(guest, [(3.0, "answering")])
    assert guest.attempts >= 4  # it kept trying all along
    assert 1 <= len(guest.greeted) <= 3


def test_once_the_machine_refuses_attempts_are_made_one_at_a_time(guest: Guest) -> None:
    """A reset means the machine's network is up and answers at once: the attempts made
    while it was silent are let go, and the next ones are made one by one."""
    _probe(guest, [(1.5, "refusing"), (2.5, "answering")])
    assert len(guest.greeted) == 1


def test_a_refused_port_is_retried_until_the_timeout() -> None:
    port = ssh.free_port()  # nothing listens
    started = time.monotonic()
    assert ssh.answering(ssh.Endpoint("127.0.0.1", port), 0.8, lambda: True) is None
    assert 0.8 <= time.monotonic() - started < 5


def test_a_stopped_machine_ends_the_probe() -> None:
    port = ssh.free_port()
    assert ssh.answering(ssh.Endpoint("127.0.0.1", port), 60, lambda: False) is None


def test_wait_for_ssh_names_the_stopped_machine_and_its_console() -> None:
    endpoint = ssh.Endpoint("127.0.0.1", ssh.free_port())
    with pytest.raises(BuildError, match=r"stopped before SSH answered.*Kernel panic"):
        ssh.wait_for_ssh(endpoint, _never, 30, lambda: False, lambda: "Kernel panic")


def test_wait_for_ssh_gives_up_after_its_timeout(listener: Listener) -> None:
    endpoint = ssh.Endpoint("127.0.0.1", listener.port)
    with pytest.raises(BuildError, match=r"did not answer within 1 s .*console ended with: -"):
        ssh.wait_for_ssh(endpoint, _never, 1, lambda: True, lambda: "-")


def test_a_failed_login_on_an_answering_port_is_retried(listener: Listener) -> None:
    listener.answer.set()
    endpoint = ssh.Endpoint("127.0.0.1", listener.port)
    tries: list[socket.socket] = []

    def login(sock: socket.socket) -> paramiko.SSHClient:
        tries.append(sock)
        raise paramiko.SSHException("not yet")

    with pytest.raises(BuildError, match=r"within 1 s \(not yet\)"):
        ssh.wait_for_ssh(endpoint, login, 1, lambda: True, lambda: "-")
    assert len(tries) >= 2
    assert all(s.fileno() == -1 for s in tries)  # each closed after its failure


def _never(sock: socket.socket) -> paramiko.SSHClient:
    raise AssertionError("login must not be tried without a banner")

"""A build machine that is a transient libvirt domain (see baker.backends.libvirt)."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import libvirt

from baker.backends.base import DiskImage, Guest, MachineRecord, SshTarget
from baker.backends.libvirt.domain import connected, is_qemu_of, qemu_pid
from baker.edge import ssh
from baker.edge.guest import SshGuest
from baker.edge.ssh import BuildKeys, Endpoint
from baker.errors import BuildError

Log = Callable[[str], None]


class LibvirtMachine:
    """A transient domain; see `Libvirt.start`."""

    def __init__(
        self,
        conn: libvirt.virConnect,
        dom: libvirt.virDomain,
        endpoint: Endpoint,
        overlay: Path,
        console_log: Path,
        keys: BuildKeys,
        log: Log,
    ) -> None:
        self.conn = conn
        self.dom = dom
        self.endpoint = endpoint
        self.overlay = overlay
        self.console_log = console_log
        self.keys = keys
        self.log = log
        self.name = str(dom.name())
        self.uri = str(conn.getURI())
        # qemu runs on when libvirtd goes away: its pid lets destroy() stop it even then.
        self.pid = qemu_pid(self.name)

    def connect(self, timeout: float) -> SshGuest:
        client, waited = ssh.wait_for_ssh(
            self.endpoint,
            lambda sock: ssh.connect(
                self.endpoint, self.keys.client_key(), host_key=self.keys.host_key(), sock=sock
            ),
            timeout,
            self.alive,
            self.console_tail,
        )
        self.log(f"SSH answered after {waited:.1f} s on {self.endpoint.port}")
        return SshGuest(client)

    def test_target(self) -> SshTarget:
        return SshTarget(self.endpoint, self.keys)

    def alive(self) -> bool:
        try:
            return bool(self.dom.isActive())
        except libvirt.libvirtError:
            if not connected(self.conn):
                raise BuildError(
                    f"lost the connection to libvirtd ({self.uri}) while the build machine "
                    "ran: is libvirtd still running? (scripts/setup-host.sh starts it)"
                ) from None
            return False  # a transient domain is gone once it stops

    def console_tail(self, lines: int = 15) -> str:
        try:
            text = self.console_log.read_bytes()[-8192:].decode(errors="replace")
        except OSError:
            return "(no console output)"
        kept = [line.strip() for line in text.splitlines() if line.strip()]
        return " | ".join(kept[-lines:]) or "(no console output)"

    def stop(self, guest: Guest, timeout: float) -> None:
        # The connection drops as the machine goes down; what counts is that it stops.
        with contextlib.suppress(Exception):
            guest.run("systemctl poweroff", lambda _line: None, 10)
        guest.close()
        deadline = time.monotonic() + timeout
        while self.alive() and time.monotonic() < deadline:
            time.sleep(0.2)
        if self.alive():
            raise BuildError(
                f"the build machine did not power off within {timeout:.0f} s; its console "
                f"ended with: {self.console_tail()}"
            )

    def hand_back(self) -> DiskImage:
        return DiskImage(self.overlay)

    def record(self) -> MachineRecord:
        return MachineRecord({"domain": self.name})

    def destroy(self) -> None:
        with contextlib.suppress(libvirt.libvirtError):
            if self.dom.isActive():
                self.dom.destroy()
        # Without libvirtd the domain's qemu is still ours to stop.
        if self.pid is not None and is_qemu_of(self.pid, self.name):
            with contextlib.suppress(OSError):
                os.kill(self.pid, signal.SIGKILL)
        with contextlib.suppress(libvirt.libvirtError):
            self.conn.close()

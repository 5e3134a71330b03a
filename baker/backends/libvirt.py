"""The libvirt backend: a transient domain on a qcow2 overlay of the base disk."""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from pathlib import Path

import jinja2
import libvirt

from baker.backends.accel import Accel
from baker.edge import tools
from baker.edge.ssh import BuildKeys, Endpoint, free_port
from baker.errors import BuildError, InputError
from baker.spec import LibvirtBackend

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"


def _silence_libvirt(_ctx: object, _err: object) -> None:
    """libvirt prints every error to stderr by default; ours are raised and reported once."""


libvirt.registerErrorHandler(_silence_libvirt, None)


def domain_xml(
    *,
    name: str,
    disk: Path,
    console_log: Path,
    ssh_port: int,
    accel: Accel,
    memory_mib: int,
    cpus: int,
    oem_strings: list[str],
) -> str:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    return env.get_template("domain.xml.j2").render(
        name=name,
        disk=disk,
        console_log=console_log,
        ssh_port=ssh_port,
        domain_type="kvm" if accel == "kvm" else "qemu",
        memory_mib=memory_mib,
        cpus=cpus,
        oem_strings=oem_strings,
        emulator=shutil.which("qemu-system-x86_64") or "/usr/bin/qemu-system-x86_64",
    )


def _reachable_copy(base_disk: Path, target: Path) -> Path:
    """The base disk under the work directory, which libvirt's qemu user can reach wherever
    the cache is (a private one under /tmp or ~ is not): a hard link where the filesystem
    allows it, else a sparse copy."""
    try:
        os.link(base_disk, target)
    except OSError:
        tools.run(["cp", "--sparse=always", "--reflink=auto", base_disk, target])
    return target


class LibvirtMachine:
    def __init__(
        self,
        conn: libvirt.virConnect,
        dom: libvirt.virDomain,
        endpoint: Endpoint,
        disk: Path,
        console_log: Path,
    ) -> None:
        self.conn = conn
        self.dom = dom
        self.endpoint = endpoint
        self.disk = disk
        self.console_log = console_log
        self.name = dom.name()

    def alive(self) -> bool:
        try:
            return bool(self.dom.isActive())
        except libvirt.libvirtError:
            return False  # a transient domain is gone once it stops

    def console_tail(self, lines: int = 15) -> str:
        try:
            text = self.console_log.read_bytes()[-8192:].decode(errors="replace")
        except OSError:
            return "(no console output)"
        kept = [line.strip() for line in text.splitlines() if line.strip()]
        return " | ".join(kept[-lines:]) or "(no console output)"

    def wait_stopped(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                return True
            time.sleep(0.2)
        return not self.alive()

    def destroy(self) -> None:
        if self.alive():
            with contextlib.suppress(libvirt.libvirtError):
                self.dom.destroy()
        with contextlib.suppress(libvirt.libvirtError):
            self.conn.close()


class Libvirt:
    def __init__(self, config: LibvirtBackend, accel: Accel) -> None:
        self.config = config
        self.accel = accel

    def start(self, base_disk: Path, keys: BuildKeys, workdir: Path, name: str) -> LibvirtMachine:
        overlay = workdir / "overlay.qcow2"
        backing = _reachable_copy(base_disk, workdir / "base.raw")
        # The base is only ever a backing file: every write lands in the overlay.
        tools.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", backing, overlay])
        console_log = workdir / "console.log"
        try:
            conn = libvirt.open(self.config.uri)
        except libvirt.libvirtError as e:
            raise InputError(
                f"backend.uri {self.config.uri}: cannot connect to libvirt: {e.get_error_message()}"
                " (is libvirtd running? scripts/setup-host.sh starts it)."
            ) from None
        try:
            dom, port = self._create(conn, overlay, console_log, keys, name)
        except BaseException:
            conn.close()
            raise
        return LibvirtMachine(conn, dom, Endpoint("127.0.0.1", port), overlay, console_log)

    def _create(
        self, conn: libvirt.virConnect, overlay: Path, console_log: Path, keys: BuildKeys, name: str
    ) -> tuple[libvirt.virDomain, int]:
        # The port is free when picked but qemu binds it later: on a lost race, pick again.
        last: libvirt.libvirtError | None = None
        for _ in range(5):
            port = free_port()
            xml = domain_xml(
                name=name,
                disk=overlay,
                console_log=console_log,
                ssh_port=port,
                accel=self.accel,
                memory_mib=self.config.memory_mib,
                cpus=self.config.cpus,
                oem_strings=keys.oem_strings(),
            )
            try:
                # Transient: libvirt forgets the domain as soon as it stops.
                return conn.createXML(xml, 0), port
            except libvirt.libvirtError as e:
                last = e
                if "host forwarding" not in str(e) and "Address already in use" not in str(e):
                    break
        msg = last.get_error_message() if last else "unknown error"
        raise BuildError(f"libvirt could not start the build machine: {msg}")

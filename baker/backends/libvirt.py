"""The libvirt backend: a transient domain on a qcow2 overlay of the base disk (local, or a
remote URI whose host shares this one's disks and loopback)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jinja2
import libvirt

from baker.backends import plainqemu
from baker.backends.accel import Accel
from baker.backends.base import (
    BaseDisk,
    BootPlan,
    BuildLabel,
    CloudBase,
    CloudImage,
    DiskImage,
    Guest,
    HandsBack,
    MachineRecord,
    MeasuredBoot,
    SshTarget,
    StartsFrom,
)
from baker.edge import ssh, tools
from baker.edge.guest import SshGuest
from baker.edge.ssh import BuildKeys, Endpoint, free_port
from baker.errors import BuildError
from baker.leftovers import Leftover, Owner, read_owner
from baker.recipe.spec import LibvirtBackend

Log = Callable[[str], None]


def _quiet(_message: str) -> None:
    pass


TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
# The namespace of the owner record in each domain's metadata (baker.build.leftovers).
OWNER_NS = "https://baker.invalid/domain/1"
QEMU_PIDS = Path("/run/libvirt/qemu")
# The boot paths an image of each boot mode claims, each measured (and held to the budget).
FIRMWARE: dict[str, tuple[plainqemu.Firmware, ...]] = {
    "bios": ("bios",),
    "hybrid": ("bios", "uefi"),
    "uefi": ("uefi",),
}


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
    owner: Owner | None = None,
    workdir: Path | None = None,
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
        owner=owner or Owner.me(),
        owner_ns=OWNER_NS,
        workdir=workdir or disk.parent,
        emulator=shutil.which("qemu-system-x86_64") or "/usr/bin/qemu-system-x86_64",
    )


def _qemu_pid(name: str) -> int | None:
    try:
        return int((QEMU_PIDS / f"{name}.pid").read_text().strip())
    except (OSError, ValueError):
        return None


def _is_qemu_of(pid: int, name: str) -> bool:
    """Whether `pid` is still the qemu of domain `name` (not a process that reused its pid)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return any(a.startswith(b"guest=" + name.encode()) for a in argv)


def _connected(conn: libvirt.virConnect) -> bool:
    try:
        return bool(conn.isAlive())
    except libvirt.libvirtError:
        return False


def open_connection(uri: str) -> libvirt.virConnect:
    try:
        return libvirt.open(uri)
    except libvirt.libvirtError as e:
        raise BuildError(
            f"cannot connect to libvirtd at {uri} ({e.get_error_message()}): is libvirtd "
            "running? (scripts/setup-host.sh starts it)"
        ) from None


def stale_domains(uri: str) -> list[Leftover]:
    """baker's domains on `uri` whose build process is gone (killed, or kept on purpose)."""
    conn = open_connection(uri)
    found = []
    try:
        for dom in conn.listAllDomains():
            try:
                meta = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, OWNER_NS)
            except libvirt.libvirtError:
                continue  # not one of baker's
            attrs = ET.fromstring(meta).attrib
            owner = Owner.from_dict(dict(attrs))
            if owner is None or owner.alive():
                continue
            work = attrs.get("workdir")
            kept = read_owner(Path(work)) if work else None
            why = "kept after a failure" if kept and kept.kept else (
                f"its build (pid {owner.pid}) is gone")  # fmt: skip
            found.append(Leftover("domain", dom.name(), why, _destroyer(uri, dom.name(), work)))
    finally:
        conn.close()
    return found


def _destroyer(uri: str, name: str, work: str | None) -> Callable[[], None]:
    def destroy() -> None:
        conn = open_connection(uri)
        try:
            with contextlib.suppress(libvirt.libvirtError):
                conn.lookupByName(name).destroy()
        finally:
            conn.close()
        if work and Path(work).name.startswith("baker-"):
            shutil.rmtree(work, ignore_errors=True)

    return destroy


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
        self.pid = _qemu_pid(self.name)

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
            if not _connected(self.conn):
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
        if self.pid is not None and _is_qemu_of(self.pid, self.name):
            with contextlib.suppress(OSError):
                os.kill(self.pid, signal.SIGKILL)
        with contextlib.suppress(libvirt.libvirtError):
            self.conn.close()


class Libvirt:
    """A transient libvirt domain on a qcow2 overlay of the base disk, reached over SSH on a
    loopback port forwarded by qemu's user-mode network."""

    kind = "libvirt"
    starts_from: StartsFrom = "debian"
    hands_back: HandsBack = "disk"

    def __init__(self, config: LibvirtBackend, accel: Accel, log: Log = _quiet) -> None:
        self.config = config
        self.accel = accel
        self.log = log

    def key_config(self) -> dict[str, Any]:
        # The virtual hardware the provisioners run on; not where or how fast.
        return {"type": "libvirt", "memory_mib": self.config.memory_mib, "cpus": self.config.cpus}

    def record_fields(self, machine: MachineRecord | None) -> dict[str, Any]:
        # The accelerator the image was built under; the domain was throwaway.
        return {"accel": self.accel}

    def boot_plan(self, boot: str, runs: int) -> BootPlan:
        return BootPlan(
            accel=self.accel,
            firmware=tuple((firmware, runs) for firmware in FIRMWARE[boot]),
            method=plainqemu.METHOD,
            key={"tools": tools.versions("qemu", "ovmf")},
        )

    def boot_image(
        self,
        image: DiskImage | CloudImage,
        firmware: str,
        workdir: Path,
        label: BuildLabel,
        detail: bool,
    ) -> MeasuredBoot:
        """A published image boots as a user's hypervisor starts it: plain qemu, the disk
        and nothing else (baker.backends.plainqemu), on the build machine's virtual
        hardware."""
        if not isinstance(image, DiskImage) or firmware not in ("bios", "uefi"):
            raise TypeError(f"libvirt boots a disk under bios or uefi, not {image!r} {firmware}")
        path: plainqemu.Firmware = "bios" if firmware == "bios" else "uefi"
        return plainqemu.measured_boot(
            image.path, workdir, self.accel, path, detail,
            memory_mib=self.config.memory_mib, cpus=self.config.cpus,
        )  # fmt: skip

    def start(
        self, base: BaseDisk | CloudBase, keys: BuildKeys, workdir: Path, label: BuildLabel
    ) -> LibvirtMachine:
        if not isinstance(base, BaseDisk):
            raise TypeError("libvirt machines start from a local disk")
        overlay = workdir / "overlay.qcow2"
        backing = _reachable_copy(base.path, workdir / "base.raw")
        # The base is only ever a backing file: every write lands in the overlay.
        tools.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", backing, overlay])
        console_log = workdir / "console.log"
        conn = open_connection(self.config.uri)
        try:
            dom, port = self._create(conn, overlay, console_log, keys, label.name)
        except BaseException:
            conn.close()
            raise
        endpoint = Endpoint("127.0.0.1", port)
        return LibvirtMachine(conn, dom, endpoint, overlay, console_log, keys, self.log)

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
                workdir=overlay.parent,
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

"""libvirt's side of a build machine: the domain XML (templates/domain.xml.j2), the
connection to libvirtd, the qemu process behind a domain, and the domains `baker clean`
removes once their build is gone."""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import jinja2
import libvirt

from baker.backends.accel import Accel
from baker.edge import tools
from baker.errors import BuildError
from baker.image.layout import KERNEL_CMDLINE
from baker.leftovers import Leftover, Owner, read_owner

TEMPLATES = Path(__file__).resolve().parents[3] / "templates"
# The namespace of the owner record in each domain's metadata (baker.build.leftovers).
OWNER_NS = "https://baker.invalid/domain/1"
QEMU_PIDS = Path("/run/libvirt/qemu")


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
    kernel: Path | None = None,
    initrd: Path | None = None,
    genid: str | None = None,
    incoming: bool = False,
    seed: Path | None = None,
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
        kernel=kernel,
        initrd=initrd,
        cmdline=KERNEL_CMDLINE,
        genid=genid or str(uuid.uuid4()),
        incoming=incoming,
        seed=seed,
    )


def qemu_pid(name: str) -> int | None:
    try:
        return int((QEMU_PIDS / f"{name}.pid").read_text().strip())
    except (OSError, ValueError):
        return None


def is_qemu_of(pid: int, name: str) -> bool:
    """Whether `pid` is still the qemu of domain `name` (not a process that reused its pid)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return any(a.startswith(b"guest=" + name.encode()) for a in argv)


def connected(conn: libvirt.virConnect) -> bool:
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
            on_purpose = bool(kept and kept.kept)
            why = "kept after a failure" if on_purpose else f"its build (pid {owner.pid}) is gone"
            destroy = _destroyer(uri, dom.name(), work)
            found.append(Leftover("domain", dom.name(), why, destroy, on_purpose))
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


def reachable_copy(base_disk: Path, target: Path) -> Path:
    """The base disk under the work directory, which libvirt's qemu user can reach wherever
    the cache is (a private one under /tmp or ~ is not): a hard link where the filesystem
    allows it, else a sparse copy."""
    try:
        os.link(base_disk, target)
    except OSError:
        tools.run(["cp", "--sparse=always", "--reflink=auto", base_disk, target])
    return target

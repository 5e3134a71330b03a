"""The libvirt backend: a transient domain on a qcow2 overlay of the base disk (local, or a
remote URI whose host shares this one's disks and loopback), reached over SSH on a loopback
port forwarded by QEMU's user-mode network; published images booted with plain qemu
(baker.backends.plainqemu). Modules: domain (the XML, the connection, leftovers), machine
(LibvirtMachine), saved (a machine saved and resumed)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import libvirt

from baker.backends import nocloud, plainqemu
from baker.backends.accel import Accel
from baker.backends.base import (
    BaseDisk,
    BootPlan,
    BuildLabel,
    CloudBase,
    CloudImage,
    DiskImage,
    HandsBack,
    Machine,
    MachineRecord,
    MeasuredBoot,
    StartsFrom,
)
from baker.backends.libvirt import saved
from baker.backends.libvirt.domain import (
    domain_xml,
    open_connection,
    reachable_copy,
    stale_domains,
)
from baker.backends.libvirt.machine import LibvirtMachine
from baker.edge import tools
from baker.edge.ssh import BuildKeys, Endpoint, free_port
from baker.errors import BuildError
from baker.recipe.spec import LibvirtBackend

__all__ = ["Libvirt", "LibvirtMachine", "domain_xml", "stale_domains"]

Log = Callable[[str], None]


def _quiet(_message: str) -> None:
    pass


# The boot paths an image of each boot mode claims, the one it is launched with most first:
# UEFI for a hybrid image (AWS, Azure, GCP and current VMware start it that way). Each is
# measured and held to the budget; the first `boot_runs` times, the others once.
FIRMWARE: dict[str, tuple[plainqemu.Firmware, ...]] = {
    "bios": ("bios",),
    "hybrid": ("uefi", "bios"),
    "uefi": ("uefi",),
}


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
            firmware=tuple(
                (firmware, runs if i == 0 else 1) for i, firmware in enumerate(FIRMWARE[boot])
            ),
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
            memory_mib=self.config.memory_mib, cpus=self.config.cpus, seed=image.seed,
        )  # fmt: skip

    def start(
        self, base: BaseDisk | CloudBase, keys: BuildKeys, workdir: Path, label: BuildLabel
    ) -> LibvirtMachine:
        if not isinstance(base, BaseDisk):
            raise TypeError("libvirt machines start from a local disk")
        overlay = workdir / "overlay.qcow2"
        backing = reachable_copy(base.path, workdir / "base.raw")
        # The base is only ever a backing file: every write lands in the overlay.
        tools.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", backing, overlay])
        return self._create(overlay, _boot_files(base, workdir), keys, label, None, base.seed)

    def saved_config(self) -> dict[str, Any]:
        return {
            **self.key_config(),
            "machine": "pc",
            "firmware": "direct kernel",
            "accel": self.accel,
            "tools": tools.versions("qemu"),
            "libvirt": libvirt.getVersion(),
        }

    def save(self, machine: Machine, into: Path) -> None:
        if not isinstance(machine, LibvirtMachine):
            raise TypeError(f"libvirt saves its own machines, not {machine!r}")
        saved.save(machine, into)

    def resume(
        self,
        saved_dir: Path,
        base: BaseDisk | CloudBase,
        keys: BuildKeys,
        workdir: Path,
        label: BuildLabel,
    ) -> LibvirtMachine:
        if not isinstance(base, BaseDisk):
            raise TypeError("libvirt machines resume over a local disk")
        overlay = saved.overlay_over(saved_dir, base, workdir)
        return self._create(overlay, _boot_files(base, workdir), keys, label, saved_dir, base.seed)

    def _create(
        self,
        overlay: Path,
        boot: tuple[Path, Path] | None,
        keys: BuildKeys,
        label: BuildLabel,
        resume: Path | None,
        seed: bool = False,
    ) -> LibvirtMachine:
        """A transient domain on `overlay`: started, or resumed from the machine saved in
        `resume`. The port is free when picked but qemu binds it later: on a lost race, pick
        again."""
        console_log = overlay.parent / "console.log"
        # A resumed machine's cloud-init ran long ago, but its CD-ROM must be there again.
        cdrom = nocloud.make(keys, overlay.parent / "seed.iso") if seed else None
        conn = open_connection(self.config.uri)
        last: libvirt.libvirtError | None = None
        try:
            for _ in range(5):
                port = free_port()
                xml = domain_xml(
                    name=label.name,
                    disk=overlay,
                    console_log=console_log,
                    ssh_port=port,
                    accel=self.accel,
                    memory_mib=self.config.memory_mib,
                    cpus=self.config.cpus,
                    oem_strings=keys.oem_strings(),
                    workdir=overlay.parent,
                    kernel=boot[0] if boot else None,
                    initrd=boot[1] if boot else None,
                    incoming=resume is not None,
                    seed=cdrom,
                )
                try:
                    # Transient: libvirt forgets the domain as soon as it stops.
                    dom = saved.restore(conn, resume, xml) if resume else conn.createXML(xml, 0)
                except libvirt.libvirtError as e:
                    last = e
                    if "host forwarding" in str(e) or "Address already in use" in str(e):
                        continue
                    break
                endpoint = Endpoint("127.0.0.1", port)
                return LibvirtMachine(conn, dom, endpoint, overlay, console_log, keys, self.log)
        except BaseException:
            conn.close()
            raise
        conn.close()
        msg = last.get_error_message() if last else "unknown error"
        what = "resume the saved" if resume else "start the"
        raise BuildError(f"libvirt could not {what} build machine: {msg}")


def _boot_files(base: BaseDisk, workdir: Path) -> tuple[Path, Path] | None:
    """The base's kernel and initrd where libvirt's qemu user reaches them, if it has them."""
    if base.kernel is None or base.initrd is None:
        return None
    return (
        reachable_copy(base.kernel, workdir / "vmlinuz"),
        reachable_copy(base.initrd, workdir / "initrd.img"),
    )

"""A build machine saved and resumed: libvirt's save image of the running domain (memory and
device state), and the layer its disk wrote over the base disk, kept together in a directory
(the step cache's entry); a resumed machine writes to an overlay of its own over that layer,
so several resume one saved machine at once and none changes it."""

from __future__ import annotations

from pathlib import Path

import libvirt

from baker.backends.base import BaseDisk
from baker.backends.libvirt.domain import reachable_copy
from baker.backends.libvirt.machine import LibvirtMachine
from baker.edge import tools

STATE = "state"  # libvirt's save image
LAYER = "layer.qcow2"  # what the machine wrote over the base disk, backed by "base.raw"
BASE = "base.raw"  # the base disk's name beside the layer, wherever it is resumed


def save(machine: LibvirtMachine, into: Path) -> None:
    """Save the running `machine` into `into` (which stops it)."""
    machine.dom.save(str(into / STATE))
    # The layer names its base by a name beside it, found again in every resuming machine's
    # work directory.
    tools.run(["qemu-img", "rebase", "-q", "-u", "-F", "raw", "-b", BASE, machine.overlay])
    machine.overlay.rename(into / LAYER)


def overlay_over(saved: Path, base: BaseDisk, workdir: Path) -> Path:
    """A new overlay in `workdir` over the saved layer, itself over the base disk."""
    reachable_copy(base.path, workdir / BASE)
    layer = reachable_copy(saved / LAYER, workdir / LAYER)
    overlay = workdir / "overlay.qcow2"
    tools.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", layer.name, overlay])
    return overlay


def restore(conn: libvirt.virConnect, saved: Path, xml: str) -> libvirt.virDomain:
    """The saved domain running again as `xml` says (its own name, overlay and port)."""
    conn.restoreFlags(str(saved / STATE), xml, libvirt.VIR_DOMAIN_SAVE_RUNNING)
    name = xml.split("<name>", 1)[1].split("</name>", 1)[0]
    return conn.lookupByName(name)

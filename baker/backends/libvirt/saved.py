"""A build machine saved and resumed.

libvirt's own save and restore keep a domain's name and UUID, so one saved machine could run
only once at a time; QEMU's migration stream is saved instead, through the domain's monitor,
into a file baker opens and hands over (QEMU's sandbox forbids it to open one itself). A
resumed machine is a new transient domain, with a name, UUID, port and overlay of its own,
started paused with `-incoming defer`, given the stream, then let run. Its disk is an overlay
over the saved machine's layer, itself over the base disk: several machines resume one saved
machine at once, and none changes it."""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any

import libvirt
import libvirt_qemu

from baker.backends.base import BaseDisk
from baker.backends.libvirt.domain import reachable_copy
from baker.backends.libvirt.machine import LibvirtMachine
from baker.edge import tools
from baker.errors import BuildError

STATE = "state"  # QEMU's migration stream: the machine's memory and devices
LAYER = "layer.qcow2"  # what the machine wrote over the base disk, backed by "base.raw"
BASE = "base.raw"  # the base disk's name beside the layer, wherever it is resumed
MIGRATION_TIMEOUT_S = 300


def save(machine: LibvirtMachine, into: Path) -> None:
    """Save the running `machine` into `into`; it is stopped and gone after."""
    dom = machine.dom
    _qmp(dom, "stop")
    fd = os.open(into / STATE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        _qmp(dom, "getfd", [fd], fdname="baker-save")
    finally:
        os.close(fd)
    _qmp(dom, "migrate", uri="fd:baker-save")
    _wait(dom, "saving the build machine")
    machine.destroy()
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
    """A new domain, as `xml` says (started with `-incoming defer`), running on from the
    machine saved in `saved`. On failure it is gone before the error."""
    dom = conn.createXML(xml, libvirt.VIR_DOMAIN_START_PAUSED)
    try:
        fd = os.open(saved / STATE, os.O_RDONLY)
        try:
            _qmp(dom, "getfd", [fd], fdname="baker-resume")
        finally:
            os.close(fd)
        _qmp(dom, "migrate-incoming", uri="fd:baker-resume")
        _wait(dom, "resuming the saved build machine")
        dom.resume()
    except BaseException:
        with contextlib.suppress(libvirt.libvirtError):
            dom.destroy()
        raise
    return dom


def _qmp(dom: libvirt.virDomain, command: str, files: list[int] | None = None, **args: Any) -> Any:
    request = {"execute": command, **({"arguments": args} if args else {})}
    try:
        out, _ = libvirt_qemu.qemuMonitorCommandWithFiles(dom, json.dumps(request), files or [], 0)
    except libvirt.libvirtError as e:
        raise BuildError(f"QEMU's monitor refused {command} ({e.get_error_message()}).") from None
    return json.loads(out).get("return")


def _wait(dom: libvirt.virDomain, what: str) -> None:
    """Until the domain's migration (out or in) is done; BuildError if it fails."""
    deadline = time.monotonic() + MIGRATION_TIMEOUT_S
    while time.monotonic() < deadline:
        status = _qmp(dom, "query-migrate") or {}
        if status.get("status") == "completed":
            return
        if status.get("status") in ("failed", "cancelled"):
            reason = status.get("error-desc") or status["status"]
            raise BuildError(f"{what} failed: QEMU's migration {reason}.")
        time.sleep(0.02)
    raise BuildError(f"{what} took longer than {MIGRATION_TIMEOUT_S} s.")

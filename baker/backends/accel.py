"""Choosing the accelerator: KVM only where it can really run a guest, else TCG."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from baker.errors import InputError

Accel = Literal["kvm", "tcg"]


def kvm_usable(dev: Path = Path("/dev/kvm"), cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """/dev/kvm opening is not enough: some nested hosts expose it without hardware
    virtualization, and guests crash there. The CPU must show vmx or svm too."""
    try:
        fd = os.open(dev, os.O_RDWR)
    except OSError:
        return False
    os.close(fd)
    try:
        flags = {
            word
            for line in cpuinfo.read_text().splitlines()
            if line.startswith("flags")
            for word in line.split(":", 1)[1].split()
        }
    except OSError:
        return False
    return bool(flags & {"vmx", "svm"})


def choose(requested: str, usable: bool | None = None) -> Accel:
    if usable is None:
        usable = kvm_usable()
    if requested == "tcg":
        return "tcg"
    if requested == "kvm":
        if not usable:
            raise InputError(
                "--accel kvm: KVM is not usable here (/dev/kvm missing or the CPU shows no "
                "vmx/svm); use --accel auto or tcg."
            )
        return "kvm"
    if requested == "auto":
        return "kvm" if usable else "tcg"
    raise InputError(f"--accel {requested}: expected auto, kvm or tcg.")

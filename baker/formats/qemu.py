"""The qemu-img calls the conversions make: convert (with its progress on a meter), compare,
and the virtual size of a disk."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

from baker.edge import tools
from baker.errors import BuildError
from baker.progress import Meter, Reporter

# baker's format names -> qemu-img's.
DISK_FORMATS = {"qcow2": "qcow2", "raw": "raw", "vmdk": "vmdk", "vhdx": "vhdx", "vhd": "vpc"}
# Stream-optimized: what VMware and OVA importers expect. Fixed vhd: what Azure takes; force_size
# keeps the exact virtual size instead of rounding it to a CHS geometry.
QEMU_OPTIONS = {
    "raw": [],
    "vmdk": ["-o", "subformat=streamOptimized"],
    "vhdx": [],
    "vhd": ["-o", "subformat=fixed,force_size=on"],
}


def virtual_size(image: Path, fmt: str = "qcow2") -> int:
    info = json.loads(tools.run(["qemu-img", "info", "--output=json", "-f", fmt, image]))
    return int(info["virtual-size"])


def qemu_convert(src: Path, dst: Path, fmt: str, reporter: Reporter, what: str) -> None:
    """qemu-img convert in order (no -W: the same input gives the same layout), its progress
    shown as a bar on a terminal."""
    argv = [tools.require("qemu-img"), "convert", "-p", "-f", "qcow2", "-O", DISK_FORMATS[fmt]]
    argv += [*QEMU_OPTIONS[fmt], str(src), str(dst)]
    tail = b""
    with Meter(reporter, what, 0, percent=True) as meter:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            assert proc.stdout is not None
            while chunk := os.read(proc.stdout.fileno(), 4096):
                tail = (tail + chunk)[-4096:]
                if found := re.findall(rb"\((\d+\.\d+)/100%\)", chunk):
                    meter.update(float(found[-1]))
            code = proc.wait()
        finally:
            if proc.poll() is None:  # interrupted: the conversion must not outlive us
                proc.kill()
                proc.wait()
            if proc.stdout:
                proc.stdout.close()
    if code != 0:
        said = re.sub(rb"\s*\(\d+\.\d+/100%\)\s*", b" ", tail).decode(errors="replace").strip()
        raise BuildError(f"qemu-img convert to {fmt} failed (exit {code}): {said or 'no output'}")


def same_content(a: Path, fmt_a: str, b: Path | str, fmt_b: str) -> bool:
    """`qemu-img compare`: the two disks hold the same guest-visible bytes."""
    proc = subprocess.run(
        [tools.require("qemu-img"), "compare", "-q", "-f", fmt_a, "-F", fmt_b, str(a), str(b)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode not in (0, 1):
        raise BuildError(f"qemu-img compare {a.name} failed: {proc.stderr.strip()[-300:]}")
    return proc.returncode == 0

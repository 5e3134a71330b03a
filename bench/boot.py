"""How fast a published image reaches SSH, and what each boot-time change is worth.

  compare IMAGE[=LABEL] ...   boot each image in turn (A B C A B C …) the way the measure step
                              does (plain qemu, snapshot=on, the host clock from process start
                              to the first SSH command), and print per image and firmware the
                              median time to SSH, min-max, systemd-analyze's kernel and
                              userspace medians, the slowest units, and the ratio to the first
                              image.
  ablate IMAGE --into DIR     from a baker image, variants that each undo one boot change
                              (rsa: an RSA host key made at first boot too; e2scrub: the
                              e2scrub_reap unit back; verbose: no `quiet`; initrd-most: the
                              initrd with "most" modules; keys-late: host keys made after
                              basic.target again; sshd-t: ssh.service's `sshd -t` back;
                              before: all of them undone), for compare; IMAGE itself is
                              "after". Also no-cloud-init: cloud-init disabled, to show
                              what it costs a boot where no datasource answers.

`--probe sequential` waits for SSH the way baker did before (one attempt at a time, each up to
a 5 s banner timeout); `--probe both` boots each image with each, alternated, to show what the
overlapping probe is worth.

Usage (as root, from the repository root, on a quiet machine: other VMs skew every figure):

    .venv/bin/python bench/boot.py ablate out/debian-12-base/image.qcow2 --into /var/tmp/ab
    .venv/bin/python bench/boot.py compare /var/tmp/ab/after.qcow2=after \\
        /var/tmp/ab/before.qcow2=before --runs 5 --firmware bios
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from baker.backends import plainqemu
from baker.backends.accel import choose
from baker.build.steps import measure
from baker.edge import ssh
from baker.image import bios, esp, layout

CHANGES = ("rsa", "e2scrub", "verbose", "initrd-most", "keys-late", "sshd-t")
HOSTKEYS_UNIT = "etc/systemd/system/baker-ssh-hostkeys.service"
OLD_CMDLINE = layout.KERNEL_CMDLINE.removesuffix(" quiet")


# --- compare -------------------------------------------------------------------------------


def _sequential(endpoint: ssh.Endpoint, timeout: float, alive: Any) -> socket.socket | None:
    """The probe before this change: one connection at a time, each waiting for its banner
    up to 5 s before the next is tried."""

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and alive():
        try:
            sock = socket.create_connection((endpoint.host, endpoint.port), timeout=5)
            if sock.recv(4, socket.MSG_PEEK) == b"SSH-":
                sock.settimeout(None)
                return sock
            sock.close()
        except OSError:
            pass
        time.sleep(0.25)
    return None


OVERLAPPING = ssh.answering
PROBES = {"overlapping": OVERLAPPING, "sequential": _sequential}


def compare(
    images: list[tuple[Path, str]], runs: int, firmware: list[plainqemu.Firmware], probe: str
) -> None:
    if probe == "both":  # each image once with each probe, alternated
        images = [(i, f"{label}/{p}") for i, label in images for p in PROBES]
    accel = choose("auto")
    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="baker-bench-boot-", dir="/var/tmp") as tmp:
        for n in range(runs):
            for fw in firmware:
                for image, label in images:
                    chosen = label.rpartition("/")[2] if probe == "both" else probe
                    ssh.answering = PROBES[chosen]
                    boot = plainqemu.measured_boot(image, Path(tmp), accel, fw, detail=True)
                    run = measure.run_record(boot)
                    results.setdefault((label, fw), []).append(run)
                    print(f"run {n + 1}/{runs} {label} ({fw}): SSH after "
                          f"{run['time_to_ssh_s']:.2f} s", flush=True)  # fmt: skip
    print(f"\n{accel}, {runs} boots each, alternated; probe: {probe}")
    print(f"{'image':<14} {'firmware':<8} {'to SSH (median)':>16} {'min-max':>13} "
          f"{'kernel':>7} {'userspace':>9} {'ratio':>6}")  # fmt: skip
    for fw in firmware:
        first = None
        for _, label in images:
            rows = results[(label, fw)]
            ssh_s = [r["time_to_ssh_s"] for r in rows]
            median = statistics.median(ssh_s)
            first = first or median
            kernel = statistics.median(r["kernel_s"] or 0 for r in rows)
            user = statistics.median(r["userspace_s"] or 0 for r in rows)
            print(f"{label:<14} {fw:<8} {median:>14.2f} s {min(ssh_s):>5.2f}-{max(ssh_s):<5.2f}s "
                  f"{kernel:>6.2f}s {user:>8.2f}s {median / first:>6.2f}")  # fmt: skip
    for fw in firmware:
        for _, label in images:
            units: dict[str, list[float]] = {}
            for r in results[(label, fw)]:
                for row in r.get("slowest_units", []):
                    units.setdefault(row["unit"], []).append(row["seconds"])
            top = sorted(units.items(), key=lambda kv: -statistics.median(kv[1]))[:6]
            print(f"{label} ({fw}) slowest: " + ", ".join(
                f"{u} {statistics.median(s):.2f}" for u, s in top))  # fmt: skip


# --- ablate --------------------------------------------------------------------------------


def _run(*argv: str | Path) -> None:
    subprocess.run([str(a) for a in argv], check=True, stdout=subprocess.DEVNULL)


@contextlib.contextmanager
def _mounted_root(raw: Path) -> Iterator[Path]:
    # The root partition by its offset: without udev, no partition device nodes appear.
    offset = str(layout.root_offset("hybrid"))
    loop = subprocess.run(["losetup", "--find", "--show", "--offset", offset, str(raw)],
                          check=True, capture_output=True, text=True).stdout.strip()  # fmt: skip
    root = Path(tempfile.mkdtemp(prefix="baker-ablate-"))
    mounts: list[Path] = []
    try:
        _run("mount", loop, root)
        mounts.append(root)
        for fs in ("proc", "sys", "dev"):
            _run("mount", "--bind", f"/{fs}", root / fs)
            mounts.append(root / fs)
        yield root
    finally:
        for m in reversed(mounts):
            _run("umount", m)
        _run("losetup", "-d", loop)
        root.rmdir()


def _undo(change: str, raw: Path, root: Path, scratch: Path) -> None:
    if change == "rsa":
        with (root / "etc/ssh/sshd_config.d/host-keys.conf").open("a") as f:
            f.write("HostKey /etc/ssh/ssh_host_rsa_key\n")
    elif change == "e2scrub":
        _run("chroot", root, "systemctl", "enable", "--quiet", "e2scrub_reap.service")
    elif change == "initrd-most":
        (root / "etc/initramfs-tools/conf.d/baker.conf").write_text("MODULES=most\n")
        _run("chroot", root, "update-initramfs", "-u", "-k", "all")
    elif change == "keys-late":
        unit = root / HOSTKEYS_UNIT
        text = unit.read_text().replace("DefaultDependencies=no\n", "")
        unit.write_text(text.replace("After=local-fs.target\n", ""))
    elif change == "sshd-t":
        (root / "etc/systemd/system/ssh.service.d/baker-start.conf").unlink()
    elif change == "no-cloud-init":
        (root / "etc/cloud/cloud-init.disabled").touch()
    elif change == "verbose":
        layout.KERNEL_CMDLINE = OLD_CMDLINE  # read by layout.grub_boot_lines()
        bios_part = layout.find("hybrid", "bios-boot")
        if bios_part is not None and bios_part.sectors is not None:
            bios.install(raw, scratch / "core.img", bios_part.start, bios_part.sectors)
        esp_part = layout.find("hybrid", "esp")
        if esp_part is not None:
            cfg = scratch / "grub.cfg"
            cfg.write_text(esp.grub_config())
            _run("mcopy", "-o", "-i", f"{raw}@@{esp_part.start * layout.SECTOR}", cfg,
                 "::EFI/debian/grub.cfg")  # fmt: skip


def ablate(image: Path, into: Path) -> None:
    into.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(image, into / "after.qcow2")
    variants = [*((c, (c,)) for c in CHANGES), ("before", CHANGES),
                ("no-cloud-init", ("no-cloud-init",))]  # fmt: skip
    for name, changes in variants:
        with tempfile.TemporaryDirectory(prefix="baker-ablate-", dir="/var/tmp") as tmp:
            raw = Path(tmp) / "disk.raw"
            _run("qemu-img", "convert", "-O", "raw", image, raw)
            with _mounted_root(raw) as root:
                for change in changes:
                    if change != "verbose":
                        _undo(change, raw, root, Path(tmp))
            if "verbose" in changes:
                _undo("verbose", raw, Path(tmp), Path(tmp))
            _run("qemu-img", "convert", "-O", "qcow2", raw, into / f"{name}.qcow2")
        print(f"{into / name}.qcow2: {', '.join(changes)}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    c = sub.add_parser("compare")
    c.add_argument("images", nargs="+", help="IMAGE or IMAGE=LABEL")
    c.add_argument("--runs", type=int, default=5)
    c.add_argument("--firmware", choices=("bios", "uefi", "both"), default="bios")
    c.add_argument("--probe", choices=("overlapping", "sequential", "both"), default="overlapping")
    a = sub.add_parser("ablate")
    a.add_argument("image", type=Path)
    a.add_argument("--into", type=Path, required=True)
    args = parser.parse_args()
    if args.what == "ablate":
        ablate(args.image, args.into)
        return
    images = []
    for item in args.images:
        path, _, label = item.partition("=")
        if not Path(path).is_file():
            sys.exit(f"bench/boot.py: no image at {path}")
        images.append((Path(path), label or Path(path).stem))
    firmware: list[plainqemu.Firmware] = (
        ["bios", "uefi"] if args.firmware == "both" else [args.firmware]
    )
    compare(images, args.runs, firmware, args.probe)


if __name__ == "__main__":
    main()

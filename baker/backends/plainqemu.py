"""Booting a published image the plain way, as a user's hypervisor would: qemu with the disk
and nothing else (no libvirt, no -kernel, no baker unit inside). Used to check and measure
images after they are built.

Login uses systemd's own credential mechanism: an `ssh.authorized_keys.root` credential in an
SMBIOS OEM string, which Debian 12's systemd writes to root's authorized_keys at boot. The
host key is checked against the fingerprints the image prints on its console at first boot.

Firmware: `bios` is SeaBIOS on qemu's pc machine; `uefi` is OVMF (Debian's `ovmf`) with
Secure Boot enforcing and Microsoft's keys enrolled, on the q35 machine with SMM, as a
hypervisor with Secure Boot on would start it; `uefi-insecure` is OVMF without Secure Boot.
"""

from __future__ import annotations

import contextlib
import ctypes
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import paramiko

from baker.backends import nocloud
from baker.backends.accel import Accel
from baker.backends.base import MeasuredBoot
from baker.edge import ssh, tools
from baker.errors import BuildError

Firmware = Literal["bios", "uefi", "uefi-insecure"]
OVMF_DIR = Path("/usr/share/OVMF")
# (code, variables template): the secure code needs SMM; the .ms variables enroll Microsoft's
# keys and turn Secure Boot on.
OVMF = {
    "uefi": ("OVMF_CODE_4M.secboot.fd", "OVMF_VARS_4M.ms.fd"),
    "uefi-insecure": ("OVMF_CODE_4M.fd", "OVMF_VARS_4M.fd"),
}

_FINGERPRINTS = re.compile(
    r"-----BEGIN SSH HOST KEY FINGERPRINTS-----(.*?)-----END SSH HOST KEY FINGERPRINTS-----",
    re.S,
)


@dataclass
class PlainMachine:
    proc: subprocess.Popen[bytes]
    endpoint: ssh.Endpoint
    console_log: Path
    login_key: paramiko.PKey
    started: float
    first_output_s: float | None = None

    def watch_console(self) -> None:
        """Note when the console first shows output (GRUB, then the kernel); runs in a thread
        for as long as the machine does."""
        while self.alive() and self.first_output_s is None:
            with contextlib.suppress(OSError):
                if self.console_log.stat().st_size > 0:
                    self.first_output_s = time.monotonic() - self.started
                    return
            time.sleep(0.02)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def console(self) -> str:
        try:
            return self.console_log.read_bytes().decode(errors="replace")
        except OSError:
            return ""

    def console_tail(self, lines: int = 15) -> str:
        kept = [line.strip() for line in self.console()[-8192:].splitlines() if line.strip()]
        return " | ".join(kept[-lines:]) or "(no console output)"

    def host_fingerprints(self) -> set[str]:
        """The SHA256 fingerprints the machine printed on its console at first boot."""
        found = _FINGERPRINTS.search(self.console())
        return set(re.findall(r"(SHA256:[A-Za-z0-9+/]+)", found.group(1))) if found else set()

    def wait_for_ssh(self, timeout: float = 300) -> tuple[paramiko.SSHClient, float]:
        """Log in as root once sshd answers; returns the client and the seconds since start."""
        client, _ = ssh.wait_for_ssh(
            self.endpoint,
            lambda sock: ssh.connect(
                self.endpoint,
                self.login_key,
                console_fingerprints=self.host_fingerprints,
                timeout=5,
                sock=sock,
            ),
            timeout,
            self.alive,
            self.console_tail,
        )
        return client, time.monotonic() - self.started


def _firmware(firmware: Firmware, variables: Path) -> list[str]:
    if firmware == "bios":
        return []
    code, template = OVMF[firmware]
    for name in (code, template):
        if not (OVMF_DIR / name).is_file():
            raise BuildError(f"{OVMF_DIR / name} is missing (Debian package ovmf): run "
                             "scripts/setup-host.sh.")  # fmt: skip
    # Each boot gets fresh variables: a first boot, on a machine never booted before.
    shutil.copyfile(OVMF_DIR / template, variables)
    secure = ["-global", "driver=cfi.pflash01,property=secure,value=on"]
    return [
        *(secure if firmware == "uefi" else []),
        "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_DIR / code}",
        "-drive", f"if=pflash,format=raw,unit=1,file={variables}",
    ]  # fmt: skip


def _disk(image: Path, interface: str) -> list[str]:
    if interface in ("virtio", "ide"):
        return ["-drive", f"file={image},format=qcow2,if={interface},snapshot=on"]
    # A SCSI controller of that model, the disk on it (VMware's pvscsi, LSI Logic).
    return [
        "-device", f"{interface},id=scsi0",
        "-drive", f"file={image},format=qcow2,if=none,id=disk0,snapshot=on",
        "-device", "scsi-hd,drive=disk0,bus=scsi0.0",
    ]  # fmt: skip


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child, before qemu starts: a baker killed outright (SIGKILL, OOM) takes its
    machines with it instead of leaving them running with a forwarded port."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


@contextlib.contextmanager
def boot(
    image: Path,
    workdir: Path,
    accel: Accel,
    *,
    memory_mib: int = 1024,
    cpus: int = 2,
    disk_interface: str = "virtio",
    nic: str = "virtio-net-pci",
    firmware: Firmware = "bios",
    extra: Sequence[str] = (),
    seed: bool = False,
) -> Iterator[PlainMachine]:
    """Boot `image` without ever writing it (snapshot=on); stopped and gone on exit.
    `disk_interface` is a -drive if= (virtio, ide) or a SCSI controller device (pvscsi,
    lsi53c895a) the disk hangs from; `nic` a network device; `extra`, more qemu arguments (a
    seed CD, say); `seed`, a cloud-init NoCloud seed letting the same key in (a vendor's
    cloud image, launched as its vendor intends)."""
    private, public = ssh.generate_keypair("baker-check")
    port = ssh.free_port()
    console = workdir / f"console-{port}.log"
    if seed:
        iso = nocloud.launch_seed(public, workdir / f"seed-{port}.iso")
        extra = [*extra, "-drive", f"file={iso},format=raw,media=cdrom,readonly=on"]
    board = "pc" if firmware == "bios" else "q35,smm=on" if firmware == "uefi" else "q35"
    argv = [
        tools.require("qemu-system-x86_64"),
        "-machine", f"{board},accel={accel}",
        "-m", str(memory_mib),
        "-smp", str(cpus),
        "-nodefaults", "-no-user-config", "-display", "none",
        "-serial", f"file:{console}",
        *_firmware(firmware, workdir / f"vars-{port}.fd"),
        *_disk(image, disk_interface),
        "-netdev", f"user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:{port}-:22",
        "-device", f"{nic},netdev=n0",
        "-device", "virtio-rng-pci",
        "-smbios", f"type=11,value=io.systemd.credential:ssh.authorized_keys.root={public}",
        *extra,
    ]  # fmt: skip
    stderr = (workdir / f"qemu-{port}.err").open("wb")
    started = time.monotonic()  # the host clock from the moment the machine is started
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr, preexec_fn=_die_with_parent
    )
    try:
        machine = PlainMachine(
            proc, ssh.Endpoint("127.0.0.1", port), console, ssh.private_key(private), started
        )
        threading.Thread(target=machine.watch_console, daemon=True).start()
        yield machine
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        stderr.close()


_BLAME_SEPARATOR = "----- baker: blame -----"
# systemd-analyze answers only once the boot transaction is complete.
STARTUP = "systemctl is-system-running --wait >/dev/null || true; systemd-analyze time"
BLAME = f" && echo '{_BLAME_SEPARATOR}' && systemd-analyze blame --no-pager"
METHOD = (
    "qemu-system-x86_64 -drive (no -kernel), snapshot=on, user-mode NIC; host monotonic clock "
    "from process start; bios: SeaBIOS (pc), uefi: OVMF with Secure Boot enforcing and "
    "Microsoft's keys (q35, SMM); slowest_units (systemd-analyze blame) on each firmware's "
    "first boot"
)


def measured_boot(
    image: Path,
    workdir: Path,
    accel: Accel,
    firmware: Firmware,
    detail: bool,
    timeout: float = 300,
    *,
    memory_mib: int = 1024,
    cpus: int = 2,
    seed: bool = False,
) -> MeasuredBoot:
    """One boot of `image`, timed to its first SSH command and asked for systemd's startup
    times; with `detail`, also the slowest units (systemd-analyze blame asks systemd about
    every unit: 4-5 s under TCG, worth it once per image and firmware, not every boot)."""
    with boot(image, workdir, accel, firmware=firmware, memory_mib=memory_mib,
              cpus=cpus, seed=seed) as machine:  # fmt: skip
        client, to_ssh = machine.wait_for_ssh(timeout)
        with client:
            # One command, not several: each costs a session and a process start in the guest.
            _, out, err = client.exec_command(STARTUP + (BLAME if detail else ""), timeout=300)
            code = out.channel.recv_exit_status()
            text = out.read().decode(errors="replace")
            if code != 0:
                raise BuildError(
                    f"`systemd-analyze` failed in the booted image: {err.read().decode().strip()}"
                )
    startup, _, blame = text.partition(_BLAME_SEPARATOR)
    return MeasuredBoot(
        to_ssh_s=round(to_ssh, 3),
        startup=startup,
        first_output_s=(
            round(machine.first_output_s, 3) if machine.first_output_s is not None else None
        ),
        blame=blame if detail else None,
    )

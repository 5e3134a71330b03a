"""baker against Packer's QEMU builder on the same work, side by side in one run.

Both start from the same disk: baker's own cached base disk for bench/packer/recipe.yaml
(the default Debian 12 base), given to Packer as a qcow2. Both do the same two steps: upload
provisioners/files/image-release.service, run bench/packer/setup.sh (a user, the motd, the
unit enabled). Packer is tuned as a knowledgeable user would: a disk image (no installer),
boot_wait none ("-1s"), headless, the same accelerator, 2 CPUs and 1 GiB, virtio disk and NIC, its
usual compaction of the output qcow2, `systemctl poweroff` to stop. Root's key reaches the
machine as SMBIOS OEM strings, read by the base disk's build-access unit (the base disk is
baker's build disk, whose host key comes the same way), and as systemd's
`ssh.authorized_keys.root` credential.

baker does more in the same boot: it runs the recipe's testinfra tests, generalizes (host
keys, machine id, logs), re-packs the tree canonically into a fresh disk, and then, outside
the boot -> image figure, measures boots and writes the SBOMs, provenance and checksums.

Rounds alternate Packer, baker and baker cold (A B C A B C). Each baker build gets a fresh
step cache holding what a second build from the same base finds in its cache: the base, the
disk and the saved build machine, so it resumes that machine and runs every step from
provisioning on. A cold build's cache holds only the base and the disk: it boots the machine
cold (and saves it). Printed: each run's seconds and output digest, medians with min-max, the
warm build's per-step medians, and the ratios:
  boot -> image   baker's boot..image steps (build.json) / Packer's whole build
  whole build     baker's whole build (measure and evidence included) / Packer's whole build

Usage (as root, from the repository root, after scripts/setup-host.sh, on a quiet machine):

    .venv/bin/python bench/vs_packer.py [--runs 3] [--work /var/tmp/baker-bench-packer]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from baker.backends.accel import choose
from baker.edge.ssh import BuildKeys

ROOT = Path(__file__).resolve().parents[1]
BAKER = Path(sys.executable).parent / "baker"
RECIPE = ROOT / "bench/packer/recipe.yaml"
UNIT = ROOT / "provisioners/files/image-release.service"
SETUP = ROOT / "bench/packer/setup.sh"
BOOT_TO_IMAGE = ("boot", "provision", "verify", "shutdown", "capture", "image")


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def packer_template(
    base: Path, out: Path, key: Path, keys: BuildKeys, accel: str
) -> dict[str, Any]:
    oem = ",".join(f"value={s}" for s in keys.oem_strings())
    credential = f"value=io.systemd.credential:ssh.authorized_keys.root={keys.client_public}"
    return {
        "builders": [
            {
                "type": "qemu",
                "disk_image": True,
                "iso_url": str(base),
                "iso_checksum": "none",
                "output_directory": str(out),
                "vm_name": "image.qcow2",
                "format": "qcow2",
                "accelerator": accel,
                "headless": True,
                "memory": 1024,
                "cpus": 2,
                "disk_interface": "virtio",
                "net_device": "virtio-net",
                "disk_size": "2048M",
                "skip_resize_disk": True,
                "boot_wait": "-1s",  # Packer 1.6 reads "0s" as unset (10 s); -1s is none
                "communicator": "ssh",
                "ssh_username": "root",
                "ssh_private_key_file": str(key),
                "ssh_timeout": "5m",
                "vnc_bind_address": "127.0.0.1",
                "shutdown_command": "systemctl poweroff",
                "qemuargs": [
                    # Loopback only, no way out: as baker starts its machines.
                    ["-netdev", "user,id=user.0,restrict=on,"
                                "hostfwd=tcp:127.0.0.1:{{ .SSHHostPort }}-:22"],
                    ["-smbios", f"type=11,{oem}"],
                    ["-smbios", f"type=11,{credential}"],
                    ["-device", "virtio-rng-pci"],
                ],
            }
        ],
        "provisioners": [
            {"type": "file", "source": str(UNIT),
             "destination": "/etc/systemd/system/image-release.service"},
            {"type": "shell", "script": str(SETUP)},
        ],
    }  # fmt: skip


def run_packer(work: Path, base: Path, n: int, accel: str, log: Path) -> tuple[float, str]:
    keys = BuildKeys.generate()
    key = keys.write_client_key(work / f"packer-key-{n}")
    out = work / f"packer-out-{n}"
    shutil.rmtree(out, ignore_errors=True)
    template = work / "packer.json"
    template.write_text(json.dumps(packer_template(base, out, key, keys, accel), indent=1))
    env = {**os.environ, "PACKER_CACHE_DIR": str(work / "packer_cache"), "CHECKPOINT_DISABLE": "1"}
    started = time.monotonic()
    with log.open("ab") as f:
        proc = subprocess.run(["packer", "build", "-color=false", str(template)], env=env,
                              stdout=f, stderr=subprocess.STDOUT, check=False)  # fmt: skip
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        sys.exit(f"packer build failed (exit {proc.returncode}); see {log}")
    digest = sha256(out / "image.qcow2")
    shutil.rmtree(out)
    key.unlink()
    return seconds, digest


def run_baker(
    work: Path, primed: Path, n: int, log: Path, cold: bool
) -> tuple[float, dict[str, float], str]:
    """A build whose cache holds the base, the disk and (unless `cold`) the saved machine:
    every step from provisioning (or boot) on runs."""
    cache = work / f"cache-{n}"
    shutil.rmtree(cache, ignore_errors=True)
    for step in ("base", "disk") if cold else ("base", "disk", "boot"):
        shutil.copytree(primed / "steps" / step, cache / "steps" / step, copy_function=os.link)
    cache.chmod(0o755)
    out = work / f"baker-out-{n}"
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "BAKER_CACHE_DIR": str(cache), "BAKER_WORK_DIR": str(work / "tmp")}
    started = time.monotonic()
    with log.open("ab") as f:
        proc = subprocess.run([str(BAKER), "build", str(RECIPE), "--out", str(out)], env=env,
                              stdout=subprocess.PIPE, stderr=f, check=False)  # fmt: skip
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        sys.exit(f"baker build failed (exit {proc.returncode}); see {log}")
    record = json.loads((out / "bench-vs-packer" / "build.json").read_text())
    steps = {s: float(record["steps"][s].get("seconds") or 0) for s in record["steps"]}
    shutil.rmtree(out)
    shutil.rmtree(cache)
    return seconds, steps, proc.stdout.decode().split()[-1]


def prime(work: Path, log: Path) -> tuple[Path, Path]:
    """baker's base, disk and saved machine in a cache of their own, and that disk as a qcow2
    for Packer."""
    primed = work / "cache-primed"
    primed.mkdir(exist_ok=True)
    primed.chmod(0o755)
    out = work / "prime-out"
    env = {**os.environ, "BAKER_CACHE_DIR": str(primed), "BAKER_WORK_DIR": str(work / "tmp")}
    with log.open("ab") as f:
        subprocess.run([str(BAKER), "build", str(RECIPE), "--out", str(out)], env=env,
                       stdout=f, stderr=f, check=True)  # fmt: skip
    record = json.loads((out / "bench-vs-packer" / "build.json").read_text())
    raw = primed / "steps" / "disk" / record["steps"]["disk"]["key"] / "base.raw"
    base = work / "base.qcow2"
    subprocess.run(["qemu-img", "convert", "-O", "qcow2", str(raw), str(base)], check=True)
    shutil.rmtree(out)
    return primed, base


def spread(values: list[float]) -> str:
    return (
        f"median {statistics.median(values):.1f} s (min {min(values):.1f}, max {max(values):.1f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="rounds of Packer then baker")
    parser.add_argument("--work", type=Path, default=Path("/var/tmp/baker-bench-packer"))
    args = parser.parse_args()
    if not shutil.which("packer"):
        sys.exit("bench/vs_packer.py: no packer here; `make bench-setup` installs it")
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    work.chmod(0o711)  # libvirt's qemu reaches the overlays below it
    (work / "tmp").mkdir(exist_ok=True, mode=0o711)
    log = work / "bench.log"
    log.write_bytes(b"")
    accel = choose("auto")
    version = subprocess.run(["packer", "version"], capture_output=True, text=True).stdout
    print(f"{version.splitlines()[0]}, baker, {accel}; log: {log}", flush=True)
    primed, base = prime(work, log)
    packer_s: list[float] = []
    baker_s: list[float] = []
    steps: list[dict[str, float]] = []
    cold_image_s: list[float] = []
    digests: dict[str, list[str]] = {"packer": [], "baker": [], "baker cold": []}
    for n in range(1, args.runs + 1):
        p_s, p_digest = run_packer(work, base, n, accel, log)
        b_s, b_steps, b_digest = run_baker(work, primed, n, log, cold=False)
        _, c_steps, c_digest = run_baker(work, primed, n, log, cold=True)
        packer_s.append(p_s)
        baker_s.append(b_s)
        steps.append(b_steps)
        cold_image_s.append(sum(c_steps[s] for s in BOOT_TO_IMAGE))
        digests["packer"].append(p_digest)
        digests["baker"].append(b_digest)
        digests["baker cold"].append(c_digest)
        b_image = sum(b_steps[s] for s in BOOT_TO_IMAGE)
        print(f"round {n}: packer {p_s:.1f} s {p_digest[:19]}…; baker {b_s:.1f} s "
              f"(boot -> image {b_image:.1f} s, cold {cold_image_s[-1]:.1f} s) "
              f"{b_digest[:19]}…", flush=True)  # fmt: skip
    image_s = [sum(r[s] for s in BOOT_TO_IMAGE) for r in steps]
    print(f"packer whole build:        {spread(packer_s)}")
    print(f"baker boot -> image:       {spread(image_s)}")
    print(f"baker cold boot -> image:  {spread(cold_image_s)}")
    print(f"baker whole build:         {spread(baker_s)}")
    print("baker's steps (median s): " + ", ".join(
        f"{s} {statistics.median(r[s] for r in steps):.1f}" for s in steps[0]
    ))  # fmt: skip
    p = statistics.median(packer_s)
    print(f"boot -> image / packer      = {statistics.median(image_s) / p:.2f}  (bar: <= 0.8)")
    print(f"cold boot -> image / packer = {statistics.median(cold_image_s) / p:.2f}")
    print(f"whole build / packer        = {statistics.median(baker_s) / p:.2f}")
    for tool, values in digests.items():
        same = (
            "identical in every run" if len(set(values)) == 1 else f"{len(set(values))} different"
        )
        print(f"{tool} output digests: {same}")


if __name__ == "__main__":
    main()

"""`baker export` against `tar cf - FILES | sha256sum` on the same bytes, side by side.

The issue's bar: exporting a 2 GiB image runs within 2x the time of tar + sha256sum doing the
same bytes. This makes (or takes) an artifact, then alternates the two, each run timed by the
wall clock from process start to exit, and prints the medians and their ratio.

Usage (from the repository root, as root or any user who can write --work):

    .venv/bin/python bench/export_throughput.py [--runs 5] [--work /var/tmp/baker-bench]
        [--artifact out/NAME [--pub keys/baker.pub]] [--random-mib 512] [--qcow2-only]

Without --artifact it makes one: a 2 GiB raw disk holding --random-mib MiB of random bytes in
eight spread-out runs (zeros elsewhere), converted to qcow2, with the build.json and SHA256SUMS
export needs, and (unless --qcow2-only) `baker convert --format raw`, so the bundle carries the
full 2 GiB raw disk besides the qcow2. Both sides read the files from the page cache after a
warm-up run; baker also writes the bundle to disk and fsyncs it, which tar | sha256sum does not.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from baker.artifact import sha256sums
from baker.hashing import sha256_file

BAKER = Path(sys.executable).parent / "baker"
SIZE = 2 << 30
SDE = 1686355200


def make_artifact(work: Path, random_mib: int, with_raw: bool) -> Path:
    art = work / "bench-image"
    if art.exists():
        shutil.rmtree(art)
    art.mkdir(parents=True)
    raw = work / "disk.raw"
    with raw.open("wb") as f:
        f.truncate(SIZE)
        step, run = SIZE // 8, (random_mib << 20) // 8
        for i in range(8):
            f.seek(i * step)
            for _ in range(run // (16 << 20)):
                f.write(os.urandom(16 << 20))
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw),
                    str(art / "image.qcow2")], check=True)  # fmt: skip
    raw.unlink()
    digest = "sha256:" + sha256_file(art / "image.qcow2")
    record = {"baker_version": "bench",
              "recipe": {"name": "bench-image", "file": "none", "digest": "none"},
              "image": {"digest": digest}, "source_date_epoch": SDE}  # fmt: skip
    (art / "build.json").write_text(json.dumps(record, indent=2) + "\n")
    _write_sums(art)
    if with_raw:
        subprocess.run([str(BAKER), "convert", str(art), "--format", "raw"], check=True,
                       capture_output=True)  # fmt: skip
    return art


def _write_sums(art: Path) -> None:
    (art / "SHA256SUMS").write_text(sha256sums(art))


def timed(argv: list[str]) -> float:
    start = time.monotonic()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifact", type=Path, help="an existing artifact directory")
    parser.add_argument("--pub", type=Path, help="the signer's key, for a signed --artifact")
    parser.add_argument("--work", type=Path, default=Path("/var/tmp/baker-bench"))
    parser.add_argument("--runs", type=int, default=5, help="timed runs of each (at least 3)")
    parser.add_argument("--random-mib", type=int, default=512)
    parser.add_argument("--qcow2-only", action="store_true")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    art = args.artifact or make_artifact(args.work, args.random_mib, not args.qcow2_only)
    files = sorted(p.name for p in art.iterdir() if p.is_file())
    payload = sum((art / f).stat().st_size for f in files)
    bundle = args.work / "bundle.tar"
    ours = [str(BAKER), "export", str(art), "--to", str(bundle)]
    if args.pub:
        ours += ["--pub", str(args.pub)]
    theirs = ["bash", "-o", "pipefail", "-c",
              f"tar cf - -C {art} {' '.join(files)} | sha256sum"]  # fmt: skip

    timed(ours), timed(theirs)  # warm-up: both read from the page cache from here on
    times: dict[str, list[float]] = {"baker export": [], "tar | sha256sum": []}
    for _ in range(max(3, args.runs)):
        times["baker export"].append(timed(ours))
        times["tar | sha256sum"].append(timed(theirs))
    bundle.unlink(missing_ok=True)

    print(f"artifact {art}: {len(files)} files, {payload / 2**30:.2f} GiB")
    for name, runs in times.items():
        median = statistics.median(runs)
        each = ", ".join(f"{t:.2f}" for t in runs)
        print(f"{name:16} median {median:6.2f} s  {payload / median / 2**20:7.0f} MiB/s  ({each})")
    ratio = statistics.median(times["baker export"]) / statistics.median(times["tar | sha256sum"])
    print(f"ratio baker/tar: {ratio:.2f} (the bar: at most 2.00)")


if __name__ == "__main__":
    main()

"""What `baker build A B --jobs 2` gains over building A and B one after the other.

Two small recipes (images/debian-12-base.yaml under two names, one measured boot per
firmware), each round built twice from a step cache that holds only their base and disk:
`--jobs 1` (one after the other) and `--jobs 2` (both at once), alternating which goes first.
Each call is timed from process start to exit, and the host's CPU use over it is read from
/proc/stat (busy share of all cores). Prints each round, the medians, the speed-up
(sequential / parallel) and the utilisation of each. On 2 cores under TCG expect little:
each machine already keeps two vCPU threads busy.

Usage (as root, from the repository root, after scripts/setup-host.sh, on a quiet machine):

    .venv/bin/python bench/jobs.py [--runs 2] [--work /var/tmp/baker-bench-jobs]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BAKER = Path(sys.executable).parent / "baker"
NAMES = ("bench-jobs-a", "bench-jobs-b")


def recipes(work: Path) -> list[Path]:
    proj = work / "project"
    shutil.rmtree(proj, ignore_errors=True)
    (proj / "testinfra").mkdir(parents=True)
    shutil.copy(ROOT / "images/testinfra/test_base.py", proj / "testinfra")
    (proj / ".git").mkdir()  # the project root: the recipes' files are inside it
    paths = []
    for name in NAMES:
        path = proj / f"{name}.yaml"
        path.write_text(
            (ROOT / "images/debian-12-base.yaml").read_text()
            .replace("name: debian-12-base", f"name: {name}")
            # Two machines at once on two cores: the budget is not what is measured.
            .replace("boot_budget_s: {kvm: 15, tcg: 120}\n", "") + "boot_runs: 1\n"
        )  # fmt: skip
        paths.append(path)
    return paths


def cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of all cores since boot."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def build(paths: list[Path], jobs: int, cache: Path, work: Path, log: Path) -> tuple[float, float]:
    out = work / f"out-{jobs}"
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "BAKER_CACHE_DIR": str(cache), "BAKER_WORK_DIR": str(work / "tmp")}
    busy0, total0 = cpu_times()
    started = time.monotonic()
    with log.open("ab") as f:
        argv = [str(BAKER), "build", *map(str, paths), "--jobs", str(jobs), "--out", str(out)]
        proc = subprocess.run(argv, env=env, stdout=f, stderr=f, check=False)
    seconds = time.monotonic() - started
    busy1, total1 = cpu_times()
    if proc.returncode != 0:
        sys.exit(f"baker build --jobs {jobs} failed (exit {proc.returncode}); see {log}")
    shutil.rmtree(out)
    return seconds, (busy1 - busy0) / max(1, total1 - total0)


def seeded(primed: Path, cache: Path) -> Path:
    shutil.rmtree(cache, ignore_errors=True)
    for step in ("base", "disk"):
        shutil.copytree(primed / "steps" / step, cache / "steps" / step, copy_function=os.link)
    cache.chmod(0o755)
    return cache


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path("/var/tmp/baker-bench-jobs"))
    args = parser.parse_args()
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    work.chmod(0o711)
    (work / "tmp").mkdir(exist_ok=True, mode=0o711)
    log = work / "bench.log"
    log.write_bytes(b"")
    paths = recipes(work)
    primed = work / "cache-primed"
    primed.mkdir(exist_ok=True)
    primed.chmod(0o755)
    build(paths[:1], 1, primed, work, log)  # the base and disk, once
    results: dict[int, list[tuple[float, float]]] = {1: [], 2: []}
    for n in range(1, args.runs + 1):
        for jobs in (1, 2) if n % 2 else (2, 1):
            seconds, used = build(paths, jobs, seeded(primed, work / "cache"), work, log)
            results[jobs].append((seconds, used))
            print(f"round {n}: --jobs {jobs}: {seconds:.1f} s, CPU {used:.0%} busy", flush=True)
    med = {j: statistics.median(s for s, _ in r) for j, r in results.items()}
    for jobs, rows in results.items():
        secs = [s for s, _ in rows]
        print(f"--jobs {jobs}: median {med[jobs]:.1f} s (min {min(secs):.1f}, max {max(secs):.1f}),"
              f" CPU {statistics.median(u for _, u in rows):.0%} busy")  # fmt: skip
    print(
        f"speed-up of --jobs 2 over one after the other: {med[1] / med[2]:.2f}x "
        f"({os.cpu_count()} cores)"
    )


if __name__ == "__main__":
    main()

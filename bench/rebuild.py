"""What the step cache saves: a cold build, a no-change rebuild and a one-provisioner-changed
rebuild of images/debian-12-web.yaml, side by side in one run.

Each round, in a scratch copy of the web project (so the repository is never edited):
  cold       an empty step cache: every step runs (mmdebstrap fetches from the mirror);
  no-change  the same recipe again, with the cache the cold build filled;
  changed    the site page edited (its testinfra check still holds) and its pin updated:
             the base and disk are reused, everything after them runs, the image differs.
Every build is timed from process start to exit. Prints each build's seconds and digest,
the medians, and the two ratios against the cold build (the issue's bars: no-change <= 0.05,
changed <= 0.6). Runs on a quiet machine only: other VMs skew every figure.

Usage (from the repository root, as root, with scripts/setup-host.sh done):

    .venv/bin/python bench/rebuild.py [--runs 3] [--work /var/tmp/baker-bench-rebuild]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BAKER = Path(sys.executable).parent / "baker"
RECIPE = "images/debian-12-web.yaml"
PAGE = "provisioners/files/index.html"


def project(work: Path) -> Path:
    """A copy of the web recipe and everything it names."""
    proj = work / "project"
    if proj.exists():
        shutil.rmtree(proj)
    (proj / "images").mkdir(parents=True)
    shutil.copytree(ROOT / "provisioners", proj / "provisioners")
    shutil.copytree(ROOT / "images" / "testinfra", proj / "images" / "testinfra")
    shutil.copy(ROOT / RECIPE, proj / RECIPE)
    return proj


def edit_page(proj: Path, round_no: int) -> None:
    """Change the page (its text stays what the test looks for) and re-pin it."""
    page, recipe = proj / PAGE, proj / RECIPE
    old = hashlib.sha256(page.read_bytes()).hexdigest()
    page.write_text(page.read_text().replace("</body>", f"<!-- edit {round_no} -->\n</body>"))
    new = hashlib.sha256(page.read_bytes()).hexdigest()
    recipe.write_text(recipe.read_text().replace(old, new))


def build(proj: Path, cache: Path, work: Path, out: Path, log: Path) -> tuple[float, str]:
    env = {**os.environ, "BAKER_CACHE_DIR": str(cache), "BAKER_WORK_DIR": str(work)}
    started = time.monotonic()
    with log.open("ab") as f:
        proc = subprocess.run([str(BAKER), "build", RECIPE, "--out", str(out)], cwd=proj,
                              env=env, stdout=subprocess.PIPE, stderr=f, check=False)  # fmt: skip
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        sys.exit(f"baker build failed (exit {proc.returncode}); see {log}")
    return seconds, proc.stdout.decode().split()[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="rounds of the three builds")
    parser.add_argument("--work", type=Path, default=Path("/var/tmp/baker-bench-rebuild"))
    args = parser.parse_args()
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    work.chmod(0o711)  # libvirt's qemu reaches the overlays below it
    log = work / "builds.log"
    log.write_bytes(b"")
    times: dict[str, list[float]] = {"cold": [], "no-change": [], "changed": []}
    for n in range(1, args.runs + 1):
        proj = project(work)
        cache = work / "cache"
        shutil.rmtree(cache, ignore_errors=True)
        cache.mkdir()
        cache.chmod(0o755)
        (work / "tmp").mkdir(exist_ok=True, mode=0o711)
        cold, digest = build(proj, cache, work / "tmp", work / "out", log)
        same, digest_again = build(proj, cache, work / "tmp", work / "out", log)
        edit_page(proj, n)
        changed, digest_changed = build(proj, cache, work / "tmp", work / "out", log)
        for name, seconds in (("cold", cold), ("no-change", same), ("changed", changed)):
            times[name].append(seconds)
        print(f"round {n}: cold {cold:.1f} s {digest[:19]}…, no-change {same:.1f} s "
              f"{digest_again[:19]}… ({'same' if digest_again == digest else 'DIFFERENT'}), "
              f"changed {changed:.1f} s {digest_changed[:19]}…", flush=True)  # fmt: skip
        if digest_again != digest or digest_changed == digest:
            sys.exit("the digests are not what the cache promises; see " + str(log))
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, values in times.items():
        print(f"{name:>9}: median {medians[name]:.1f} s (min {min(values):.1f}, "
              f"max {max(values):.1f}, {len(values)} runs)")  # fmt: skip
    print(f"no-change / cold = {medians['no-change'] / medians['cold']:.3f}  (bar: <= 0.05)")
    print(f"  changed / cold = {medians['changed'] / medians['cold']:.3f}  (bar: <= 0.6)")


if __name__ == "__main__":
    main()

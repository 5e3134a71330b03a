"""What a change to baker's build steps is worth, in seconds per step: two baker trees (a
commit before the change, and one after) build the same recipe side by side, alternating
runs, and the medians of each step's seconds are printed next to each other with their ratio.

Each tree first builds the recipe once into a cache of its own (its keys are its own code's);
then every run starts from a fresh cache holding that tree's base, disk and (where it saves
one) saved build machine: what a second build from the same base finds, so every step from
the build machine's boot (or resume) to the image runs. The measured boots are left out (they
time the image, not the build); build.json's step seconds are what is compared.

Usage (as root, from the repository root, on a quiet machine):

    git worktree add /var/tmp/baker-before <commit>
    .venv/bin/python bench/steps.py before=/var/tmp/baker-before after=. --runs 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

RECIPE = Path(__file__).resolve().parent / "packer" / "recipe.yaml"
KEPT = ("base", "disk", "boot")  # what a second build from the same base finds
# Builds RECIPE with the tree on sys.path, the measured boots left out; prints build.json.
BUILD = """
import json, sys
from pathlib import Path
from rich.console import Console
from baker import recipe
from baker.build.options import Options
from baker.build.pipeline import build
from baker.cache import Cache
from baker.progress import Reporter
out = Path(sys.argv[2])
spec = recipe.load(Path(sys.argv[1]))
result = build(spec, Options(out=out, cache=Cache(Path(sys.argv[3])), measure=False),
               Reporter(Console(stderr=True)))
print((result.artifact / "build.json").read_text())
"""


def build(tree: Path, cache: Path, work: Path, log: Path) -> dict[str, float]:
    out = work / "out"
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "PYTHONPATH": str(tree), "BAKER_WORK_DIR": str(work / "tmp")}
    with log.open("ab") as f:
        proc = subprocess.run(
            [sys.executable, "-c", BUILD, str(RECIPE), str(out), str(cache)],
            env=env, stdout=subprocess.PIPE, stderr=f, check=False, cwd=tree,
        )  # fmt: skip
    if proc.returncode != 0:
        sys.exit(f"the build with {tree} failed; see {log}")
    record = json.loads(proc.stdout)
    return {name: float(s.get("seconds") or 0) for name, s in record["steps"].items()}


def fresh_cache(primed: Path, into: Path) -> Path:
    shutil.rmtree(into, ignore_errors=True)
    for step in KEPT:
        if (primed / "steps" / step).is_dir():
            shutil.copytree(primed / "steps" / step, into / "steps" / step, copy_function=os.link)
    into.mkdir(parents=True, exist_ok=True)
    into.chmod(0o755)
    return into


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("trees", nargs=2, metavar="LABEL=TREE")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path("/var/tmp/baker-bench-steps"))
    args = parser.parse_args()
    trees = [(label, Path(path).resolve()) for label, path in (t.split("=", 1) for t in args.trees)]
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    work.chmod(0o711)
    (work / "tmp").mkdir(exist_ok=True, mode=0o711)
    log = work / "bench.log"
    log.write_bytes(b"")
    primed = {}
    for label, tree in trees:
        primed[label] = work / f"primed-{label}"
        primed[label].mkdir(exist_ok=True, mode=0o755)
        build(tree, primed[label], work, log)
    results: dict[str, list[dict[str, float]]] = {label: [] for label, _ in trees}
    for n in range(1, args.runs + 1):
        for label, tree in trees:
            cache = fresh_cache(primed[label], work / "cache")
            steps = build(tree, cache, work, log)
            results[label].append(steps)
            ran = {s: round(v, 1) for s, v in steps.items() if v}
            print(f"run {n} {label}: {ran}", flush=True)
    (a, _), (b, _) = trees
    names = [s for s in results[b][0] if s in results[a][0]]
    print(f"\n{'step':<10} {a:>10} {b:>10} {'ratio':>7}   (median seconds, {args.runs} runs)")
    total = {a: 0.0, b: 0.0}
    for step in names:
        ma = statistics.median(r[step] for r in results[a])
        mb = statistics.median(r[step] for r in results[b])
        total[a] += ma
        total[b] += mb
        ratio = f"{mb / ma:.2f}" if ma else "-"
        print(f"{step:<10} {ma:>10.2f} {mb:>10.2f} {ratio:>7}")
    print(f"{'all':<10} {total[a]:>10.2f} {total[b]:>10.2f} {total[b] / total[a]:>7.2f}")


if __name__ == "__main__":
    main()

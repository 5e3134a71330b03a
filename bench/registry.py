"""Push and pull throughput of `baker push` / `baker pull` against `skopeo copy` of the same
manifest, side by side on one loopback registry (Debian's docker-registry, plain HTTP).

Each round pushes to fresh repositories (so every blob is sent) and pulls into fresh
directories, alternating baker and skopeo (A B A B):
  push: baker push ARTIFACT          vs  skopeo copy oci:LAYOUT     (the same manifest and blobs)
  pull: baker pull (with every check) vs  skopeo copy docker:// dir:  (digests checked, no verify)
and prints each median, MB/s over the bytes moved, min-max, and baker/skopeo as a ratio.

Usage (as root, from the repository root; ARTIFACT is a built image such as the 2 GiB-virtual
out/debian-12-base, KEY its signer's baker.pub):

    .venv/bin/python bench/registry.py out/debian-12-base --pub keys/baker.pub --rounds 3
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from support import registry_server  # noqa: E402

BAKER = ROOT / ".venv" / "bin" / "baker"


# skopeo remembers where it saw each blob and mounts it from there instead of sending it;
# forgotten before each of its runs, so it moves every byte as baker does.
SKOPEO_BLOB_CACHE = Path("/var/lib/containers/cache")


def _timed(argv: list[str]) -> float:
    if argv[0] == "skopeo":
        for f in SKOPEO_BLOB_CACHE.glob("blob-info-cache-*"):
            f.unlink()
    start = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True)
    took = time.monotonic() - start
    if proc.returncode != 0:
        sys.exit(f"{' '.join(argv[:3])} failed: {proc.stderr.strip().splitlines()[-1:]}")
    return took


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("artifact", type=Path)
    parser.add_argument("--pub", type=Path, required=True, help="the artifact signer's baker.pub")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="baker-bench-registry-", dir="/var/tmp"))
    reg = registry_server.start(scratch / "registry", tls=False)
    host, plain = reg.host, ["--src-tls-verify=false", "--dest-tls-verify=false"]
    try:
        seed = f"{host}/seed/img:1"
        subprocess.run(
            [str(BAKER), "push", str(args.artifact), seed], check=True, capture_output=True
        )
        layout = scratch / "layout"
        subprocess.run(
            ["skopeo", "copy", "--preserve-digests", *plain, f"docker://{seed}", f"oci:{layout}:1"],
            check=True,
            capture_output=True,
        )
        raw = subprocess.run(
            ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{seed}"],
            check=True,
            capture_output=True,
        ).stdout
        manifest = json.loads(raw)
        moved = manifest["config"]["size"] + sum(layer["size"] for layer in manifest["layers"])
        times: dict[str, list[float]] = {
            k: [] for k in ("baker push", "skopeo push", "baker pull", "skopeo pull")
        }
        for n in range(args.rounds):
            times["baker push"].append(
                _timed([str(BAKER), "push", str(args.artifact), f"{host}/b{n}/img:1"])
            )
            times["skopeo push"].append(
                _timed(["skopeo", "copy", *plain, f"oci:{layout}:1", f"docker://{host}/s{n}/img:1"])
            )
            into = scratch / f"pulled-{n}"
            times["baker pull"].append(
                _timed([str(BAKER), "pull", seed, "--into", str(into), "--pub", str(args.pub)])
            )
            times["skopeo pull"].append(
                _timed(
                    ["skopeo", "copy", *plain, f"docker://{seed}", f"dir:{scratch / f'dir-{n}'}"]
                )
            )
            shutil.rmtree(into)
            shutil.rmtree(scratch / f"dir-{n}")
        print(
            f"{args.artifact}: manifest layers + config {moved / 1e6:.1f} MB; "
            f"{args.rounds} rounds, A B A B"
        )
        for name, values in times.items():
            med = statistics.median(values)
            print(
                f"  {name:12s} median {med:6.2f} s  {moved / med / 1e6:7.1f} MB/s  "
                f"(min {min(values):.2f}, max {max(values):.2f})"
            )
        for kind in ("push", "pull"):
            ratio = statistics.median(times[f"baker {kind}"]) / statistics.median(
                times[f"skopeo {kind}"]
            )
            print(f"  {kind}: baker / skopeo = {ratio:.2f}")
    finally:
        reg.stop()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()

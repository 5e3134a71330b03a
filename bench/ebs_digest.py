"""How fast an AMI's raw digest is read back: baker's EBS direct read of a snapshot
(`baker.ami.ebs.snapshot_digest`, as an EC2 build and `baker verify --live` run it) against
the physical limit here, SHA-256 of the same volume's bytes from memory (the hash alone: no
API, no network, no disk), and against `sha256sum` of the volume as a local sparse raw file,
side by side, alternating A B C A B C.

The snapshot lives in moto (tests/support/moto_launch.py) on loopback: VOLUME GiB with DATA
MiB of random blocks spread over it, the rest never written (zeros), as on a fresh root volume.
It prints each median, min-max, the throughput over the volume, and baker/sha256sum.

Usage (from the repository root):

    .venv/bin/python bench/ebs_digest.py --volume 8 --data 400 --rounds 3
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))
from support.ec2_endpoint import REGION, MotoServer, client  # noqa: E402

from baker.ami.ebs import BLOCK, hash_zeros, snapshot_digest  # noqa: E402
from baker.edge.aws import Aws  # noqa: E402


def fill(moto: MotoServer, volume_gib: int, data_mib: int, raw: Path) -> str:
    """A completed snapshot of `volume_gib` with `data_mib` of random blocks; the same bytes
    written to `raw` (sparse). Returns the snapshot id."""
    ebs = client("ebs", REGION, moto.url)
    snapshot = ebs.start_snapshot(VolumeSize=volume_gib)["SnapshotId"]
    rng = random.Random(42)
    blocks = volume_gib * (1 << 30) // BLOCK
    chosen = sorted(rng.sample(range(blocks), data_mib * (1 << 20) // BLOCK))
    with raw.open("wb") as f:
        f.truncate(volume_gib << 30)
        for index in chosen:
            data = rng.randbytes(BLOCK)
            f.seek(index * BLOCK)
            f.write(data)
            ebs.put_snapshot_block(
                SnapshotId=snapshot, BlockIndex=index, BlockData=data, DataLength=BLOCK,
                Checksum=base64.b64encode(hashlib.sha256(data).digest()).decode(),
                ChecksumAlgorithm="SHA256",
            )  # fmt: skip
    ebs.complete_snapshot(SnapshotId=snapshot, ChangedBlocksCount=len(chosen))
    return str(snapshot)


class Written:
    """The data blocks of the raw file, in memory (index -> bytes): what the hash-alone
    baseline hashes between runs of zeros, without reading the file."""

    def __init__(self, raw: Path) -> None:
        start = time.monotonic()
        self.blocks: dict[int, bytes] = {}
        with raw.open("rb") as f:
            offset = 0
            while True:
                try:
                    offset = os.lseek(f.fileno(), offset, os.SEEK_DATA)
                except OSError:
                    break
                end = os.lseek(f.fileno(), offset, os.SEEK_HOLE)
                f.seek(offset)
                for i in range(offset // BLOCK, end // BLOCK):
                    self.blocks[i] = f.read(BLOCK)
                offset = end
        self.size = raw.stat().st_size
        print(f"{len(self.blocks)} data blocks in memory ({time.monotonic() - start:.1f} s)")


def hash_alone(raw: Path, written: Written) -> str:
    h = hashlib.sha256()
    index = 0
    for data_index in sorted(written.blocks):
        hash_zeros(h, (data_index - index) * BLOCK)
        h.update(written.blocks[data_index])
        index = data_index + 1
    hash_zeros(h, written.size - index * BLOCK)
    return f"sha256:{h.hexdigest()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--volume", type=int, default=8, help="GiB")
    parser.add_argument("--data", type=int, default=400, help="MiB of written blocks")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-ebs-", dir="/var/tmp") as tmp:
        moto = MotoServer(Path(tmp))
        try:
            os.environ.update(AWS_ENDPOINT_URL=moto.url, AWS_ACCESS_KEY_ID="AKIABENCH0000000000",
                              AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION=REGION)  # fmt: skip
            raw = Path(tmp) / "volume.raw"
            snapshot = fill(moto, args.volume, args.data, raw)
            written = Written(raw)
            ebs = Aws(REGION).ebs()
            times: dict[str, list[float]] = {"baker": [], "hash alone": [], "sha256sum": []}
            digests = set()
            for _ in range(args.rounds):
                start = time.monotonic()
                digests.add(snapshot_digest(ebs, snapshot, lambda _l: None).raw_digest)
                times["baker"].append(time.monotonic() - start)
                start = time.monotonic()
                digests.add(hash_alone(raw, written))
                times["hash alone"].append(time.monotonic() - start)
                start = time.monotonic()
                out = subprocess.run(["sha256sum", raw], capture_output=True, text=True,
                                     check=True).stdout  # fmt: skip
                times["sha256sum"].append(time.monotonic() - start)
                digests.add(f"sha256:{out.split()[0]}")
            assert len(digests) == 1, f"the two disagree: {digests}"
        finally:
            moto.stop()
    print(f"{args.volume} GiB volume, {args.data} MiB of data blocks, {args.rounds} rounds")
    print("| | median s (min-max) | GiB/s over the volume |")
    print("|---|---|---|")
    for name, values in times.items():
        med = statistics.median(values)
        print(f"| {name} | {med:.2f} ({min(values):.2f}-{max(values):.2f}) | "
              f"{args.volume / med:.2f} |")  # fmt: skip
    baker = statistics.median(times["baker"])
    for other in ("hash alone", "sha256sum"):
        print(f"baker / {other}: {baker / statistics.median(times[other]):.2f}x")
    print(f"all: {digests.pop()}")


if __name__ == "__main__":
    main()

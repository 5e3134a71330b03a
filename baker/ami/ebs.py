"""A disk image's raw bytes into a new EBS snapshot through the EBS direct API, without S3.

The qcow2 is converted to raw in a temporary directory, and the raw bytes go up in 512 KiB
blocks, each with its SHA-256 checksum, all-zero blocks skipped (a new snapshot reads as
zeros where nothing was written). The whole raw image, zeros included, is hashed on the way
out, so what was sent can be checked against the raw-content digest the build recorded.
"""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import hashlib
import math
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from baker.edge import tools
from baker.edge.aws import api, tags
from baker.errors import BuildError

BLOCK = 512 * 1024  # the EBS direct API's one block size
GIB = 1 << 30
THREADS = 8  # blocks in flight; boto3 clients are thread-safe
SNAPSHOT_LIFETIME_MIN = 60  # an unfinished snapshot fails by itself after this long

_ZERO = bytes(BLOCK)


@contextlib.contextmanager
def raw_copy(image: Path, work_root: Path | None) -> Iterator[Path]:
    """The qcow2 `image` as a raw disk in a temporary directory (sparse; removed afterwards)
    under `work_root`, else $BAKER_WORK_DIR, else /var/tmp."""
    root = work_root or Path(os.environ.get("BAKER_WORK_DIR", "/var/tmp"))
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="baker-publish-", dir=root) as tmp:
        raw = Path(tmp) / "image.raw"
        tools.run(["qemu-img", "convert", "-q", "-f", "qcow2", "-O", "raw", image, raw])
        yield raw


def upload_snapshot(
    ebs: Any,
    raw: Path,
    raw_digest: str,
    description: str,
    values: dict[str, str],
    started: Callable[[str], None],
    log: Callable[[str], None],
) -> str:
    """A new EBS snapshot, tagged with `values`, holding exactly the bytes of `raw`, which
    hash to `raw_digest`; returns its id. `started` learns the id the moment the snapshot
    exists, so a failure after that can remove it."""
    size = raw.stat().st_size
    with api("start an EBS snapshot"):
        snapshot = str(
            ebs.start_snapshot(
                VolumeSize=max(1, math.ceil(size / GIB)),
                Description=description,
                Tags=tags(values),
                Timeout=SNAPSHOT_LIFETIME_MIN,
            )["SnapshotId"]
        )
    started(snapshot)
    log(f"uploading {size // (1 << 20)} MiB into snapshot {snapshot} (zero blocks skipped)")
    sent, written = put_blocks(ebs, snapshot, raw)
    # What was hashed on the way out is what was sent: a file changed under us shows here.
    if f"sha256:{sent}" != raw_digest:
        raise BuildError(f"the bytes uploaded hash to sha256:{sent}, not {raw_digest}.")
    with api(f"complete snapshot {snapshot}"):
        ebs.complete_snapshot(SnapshotId=snapshot, ChangedBlocksCount=written)
    log(f"snapshot {snapshot}: {written} blocks written")
    return snapshot


def put_blocks(ebs: Any, snapshot: str, raw: Path) -> tuple[str, int]:
    """Upload every non-zero 512 KiB block of `raw`; returns the sha256 (hex) of all of its
    bytes, read once, and the number of blocks written."""
    whole = hashlib.sha256()
    written = 0
    pool = concurrent.futures.ThreadPoolExecutor(THREADS, thread_name_prefix="ebs-put")
    in_flight: set[concurrent.futures.Future[None]] = set()
    try:
        with raw.open("rb") as f:
            for index, block in enumerate(iter(lambda: f.read(BLOCK), b"")):
                whole.update(block)
                if block == _ZERO[: len(block)]:
                    continue
                padded = block.ljust(BLOCK, b"\0")  # the disk's tail, if not a whole block
                in_flight.add(pool.submit(put_block, ebs, snapshot, index, padded))
                written += 1
                if len(in_flight) >= 2 * THREADS:
                    done, in_flight = concurrent.futures.wait(
                        in_flight, return_when=concurrent.futures.FIRST_COMPLETED
                    )
                    for future in done:
                        future.result()
        for future in concurrent.futures.as_completed(in_flight):
            future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return whole.hexdigest(), written


def put_block(ebs: Any, snapshot: str, index: int, data: bytes) -> None:
    """One whole block, with the SHA-256 checksum the service checks it against."""
    checksum = base64.b64encode(hashlib.sha256(data).digest()).decode()
    with api(f"upload block {index} of snapshot {snapshot}"):
        ebs.put_snapshot_block(
            SnapshotId=snapshot,
            BlockIndex=index,
            BlockData=data,
            DataLength=len(data),
            Checksum=checksum,
            ChecksumAlgorithm="SHA256",
        )

"""A disk image's raw bytes into a new EBS snapshot through the EBS direct API, without S3;
and a snapshot's raw bytes hashed back out of it the same way (the raw digest of an AMI).

The qcow2 is converted to raw in a temporary directory, and the raw bytes go up in 512 KiB
blocks, each with its SHA-256 checksum, all-zero blocks skipped (a new snapshot reads as
zeros where nothing was written). The whole raw image, zeros included, is hashed on the way
out, so what was sent can be checked against the raw-content digest the build recorded.
"""

from __future__ import annotations

import base64
import collections
import concurrent.futures
import contextlib
import hashlib
import math
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from baker import leftovers
from baker.edge import tools
from baker.edge.aws import api, tags
from baker.errors import BuildError

if TYPE_CHECKING:
    from mypy_boto3_ebs import EBSClient
    from mypy_boto3_ebs.type_defs import ListSnapshotBlocksRequestTypeDef

BLOCK = 512 * 1024  # the EBS direct API's one block size
GIB = 1 << 30
THREADS = 8  # blocks in flight; boto3 clients are thread-safe
SNAPSHOT_LIFETIME_MIN = 60  # an unfinished snapshot fails by itself after this long

_ZERO = bytes(BLOCK)
TAG_RAW = "baker:raw-digest"  # on an AMI: the sha256 of the raw volume its root snapshot holds


@contextlib.contextmanager
def raw_copy(image: Path, work_root: Path | None) -> Iterator[Path]:
    """The qcow2 `image` as a raw disk in a temporary directory (sparse; removed afterwards)
    under `work_root`, else $BAKER_WORK_DIR, else /var/tmp."""
    root = leftovers.work_root(work_root)
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="baker-publish-", dir=root) as tmp:
        raw = Path(tmp) / "image.raw"
        tools.run(["qemu-img", "convert", "-q", "-f", "qcow2", "-O", "raw", image, raw])
        yield raw


def upload_snapshot(
    ebs: EBSClient,
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


def put_blocks(ebs: EBSClient, snapshot: str, raw: Path) -> tuple[str, int]:
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


def put_block(ebs: EBSClient, snapshot: str, index: int, data: bytes) -> None:
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


# --- reading a snapshot back ---------------------------------------------------------------


@dataclass(frozen=True)
class SnapshotDigest:
    """What ami.json records of the raw volume an AMI's root snapshot holds."""

    snapshot_id: str
    raw_digest: str  # sha256:<hex> of every byte of the volume, unwritten blocks as zeros
    block_size: int
    volume_size: int  # bytes
    blocks: int  # blocks the snapshot holds data for

    def as_json(self) -> dict[str, object]:
        return {
            "root_snapshot_id": self.snapshot_id,
            "raw_digest": self.raw_digest,
            "block_size": self.block_size,
            "volume_size": self.volume_size,
            "blocks_read": self.blocks,
        }


def snapshot_digest(ebs: EBSClient, snapshot: str, log: Callable[[str], None]) -> SnapshotDigest:
    """The sha256 of the whole volume `snapshot` holds, read through the EBS direct API in
    block order: its blocks fetched THREADS at a time as list_snapshot_blocks names them,
    page by page (memory stays bounded whatever the volume's size), each checked against its
    checksum, and zeros for the blocks it never wrote. A local image published into a
    snapshot hashes to its raw_digest here."""
    whole = hashlib.sha256()
    pool = concurrent.futures.ThreadPoolExecutor(THREADS, thread_name_prefix="ebs-get")
    read = 0
    size = block = 0
    try:
        position = 0  # the next block index to hash
        window: collections.deque[tuple[int, concurrent.futures.Future[bytes]]]
        window = collections.deque()
        for size, block, page in _pages(ebs, snapshot):  # noqa: B007 (the last page's)
            for index, token in page:
                window.append((index, pool.submit(get_block, ebs, snapshot, index, token, block)))
                # Bounded: at most 2 * THREADS blocks are held, read ahead of the hash.
                while len(window) > 2 * THREADS:
                    position = _hash_next(whole, window, position, block)
                    read += 1
        while window:
            position = _hash_next(whole, window, position, block)
            read += 1
        if not block or size % block or position * block > size:
            raise BuildError(
                f"snapshot {snapshot}: {size} bytes do not hold its {block}-byte blocks."
            )
        hash_zeros(whole, size - position * block)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    log(f"snapshot {snapshot}: {size >> 30} GiB hashed, {read} blocks of data read")
    return SnapshotDigest(snapshot, f"sha256:{whole.hexdigest()}", block, size, read)


def _hash_next(
    whole: Any,
    window: collections.deque[tuple[int, concurrent.futures.Future[bytes]]],
    position: int,
    block: int,
) -> int:
    """Hash the zeros up to the window's first block, then the block; the next position."""
    index, future = window.popleft()
    hash_zeros(whole, (index - position) * block)
    whole.update(future.result())
    return index + 1


def _pages(ebs: EBSClient, snapshot: str) -> Iterator[tuple[int, int, list[tuple[int, str]]]]:
    """(volume bytes, block size, [(index, token)]) for each page of the snapshot's blocks."""
    token: str | None = None
    last = -1
    while True:
        params: ListSnapshotBlocksRequestTypeDef = {"SnapshotId": snapshot, "MaxResults": 10000}
        if token:
            params["NextToken"] = token
        with api(f"list the blocks of snapshot {snapshot}"):
            reply = ebs.list_snapshot_blocks(**params)
        page = sorted((int(b["BlockIndex"]), str(b["BlockToken"])) for b in reply.get("Blocks", []))
        if page and page[0][0] <= last:
            raise BuildError(f"snapshot {snapshot}: its block list is out of order.")
        last = page[-1][0] if page else last
        yield int(reply["VolumeSize"]) * GIB, int(reply["BlockSize"]), page
        token = reply.get("NextToken")
        if not token:
            return


def get_block(ebs: EBSClient, snapshot: str, index: int, token: str, size: int) -> bytes:
    """One block's bytes, checked against the checksum the service gives with them."""
    with api(f"read block {index} of snapshot {snapshot}"):
        reply = ebs.get_snapshot_block(SnapshotId=snapshot, BlockIndex=index, BlockToken=token)
        data = reply["BlockData"].read()
    if len(data) != size:
        raise BuildError(f"block {index} of snapshot {snapshot} is {len(data)} bytes, not {size}.")
    checksum = reply.get("Checksum")
    if checksum and base64.b64encode(hashlib.sha256(data).digest()).decode() != checksum:
        raise BuildError(f"block {index} of snapshot {snapshot} does not match its checksum.")
    return bytes(data)


_ZEROS = bytes(16 * BLOCK)


def hash_zeros(h: Any, count: int) -> None:
    """Feed `count` zero bytes to the hash `h`, 8 MiB at a time."""
    while count > 0:
        n = min(count, len(_ZEROS))
        h.update(memoryview(_ZEROS)[:n])
        count -= n

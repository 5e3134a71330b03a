"""A KubeVirt containerDisk of an artifact: a container image whose one layer holds the qcow2
at /disk/image.qcow2 (owned by 107:107, KubeVirt's qemu user), as KubeVirt expects.

The layer is an uncompressed tar made on the fly: two headers, the disk's bytes and padding,
read from the disk file where they lie, so the image is never copied or held in memory. The
tar's times are the artifact's source date, so the same artifact gives the same layer digest.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from baker import artifact
from baker.registry import oci
from baker.registry.client import Client
from baker.registry.ref import Ref

LAYER = "application/vnd.oci.image.layer.v1.tar"
IMAGE_CONFIG = "application/vnd.oci.image.config.v1+json"
_QEMU_UID = 107  # KubeVirt runs qemu as uid/gid 107 and reads the disk as that user
_BLOCK = 512


class TarStream:
    """An uncompressed tar of `disk` as disk/image.qcow2, readable at any offset."""

    def __init__(self, disk: Path, mtime: int) -> None:
        self.disk = disk
        self.disk_size = disk.stat().st_size

        def header(name: str, kind: bytes, size: int, mode: int) -> bytes:
            info = tarfile.TarInfo(name)
            info.type, info.size, info.mode, info.mtime = kind, size, mode, mtime
            info.uid = info.gid = _QEMU_UID
            info.uname = info.gname = ""
            return info.tobuf(format=tarfile.GNU_FORMAT)

        self.head = header("disk", tarfile.DIRTYPE, 0, 0o555) + header(
            f"disk/{artifact.IMAGE}", tarfile.REGTYPE, self.disk_size, 0o440
        )
        pad = -self.disk_size % _BLOCK
        self.tail = b"\0" * (pad + 2 * _BLOCK)
        self.size = len(self.head) + self.disk_size + len(self.tail)

    def read_at(self, offset: int, n: int) -> bytes:
        out = io.BytesIO()
        end = min(offset + n, self.size)
        disk_at, tail_at = len(self.head), len(self.head) + self.disk_size
        if offset < disk_at:
            out.write(self.head[offset : min(end, disk_at)])
        if end > disk_at and offset < tail_at:
            start = max(offset, disk_at) - disk_at
            with self.disk.open("rb") as f:
                f.seek(start)
                out.write(f.read(min(end, tail_at) - disk_at - start))
        if end > tail_at:
            out.write(self.tail[max(offset, tail_at) - tail_at : end - tail_at])
        return out.getvalue()

    def digest(self) -> str:
        h = hashlib.sha256()
        for offset in range(0, self.size, 1 << 22):
            h.update(self.read_at(offset, 1 << 22))
        return f"sha256:{h.hexdigest()}"


def push_containerdisk(
    client: Client, directory: Path, ref: Ref, on_bytes: Callable[[int], None] = lambda n: None
) -> tuple[Ref, int]:
    """Push the containerDisk image to `ref`; returns it at its digest and the bytes sent."""
    record = artifact.read_record(directory)
    stream = TarStream(directory / artifact.IMAGE, record.source_date_epoch or 0)
    layer_digest = stream.digest()  # uncompressed: the diff_id is the layer digest
    sent = client.upload_stream(ref.repository, layer_digest, stream.size, stream.read_at, on_bytes)
    config_doc: dict[str, Any] = {
        "architecture": "amd64",
        "os": "linux",
        "created": oci.created(record.source_date_epoch),
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    }
    config = client.upload_bytes(ref.repository, oci.canonical(config_doc))
    manifest = oci.image_manifest(
        oci.descriptor(IMAGE_CONFIG, config["digest"], config["size"]),
        [oci.descriptor(LAYER, layer_digest, stream.size)],
        {
            oci.CREATED: oci.created(record.source_date_epoch),
            oci.TITLE: record.recipe.name,
            oci.BAKER_DIGEST: record.image.digest or "",
        },
        artifact_type=None,
    )
    client.put_manifest(ref.repository, ref.reference, manifest, oci.MANIFEST)
    return ref.at(oci.digest_of(manifest)), sent

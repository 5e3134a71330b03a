"""`baker promote SRC_REF DST_REF [--force]`: the same manifest, by digest, somewhere else.

The manifest, its blobs and its referrers are copied byte for byte, so the digest a team
tested is the digest it ships. On one registry the blobs are mounted across repositories (the
disk is not sent again); between registries they are streamed through. A tag that already
names a different digest is moved only with --force.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from baker.errors import InputError
from baker.registry import oci, referrers
from baker.registry.client import Client, RegistryError
from baker.registry.ref import Ref


def promote(
    src_client: Client,
    src: Ref,
    dst_client: Client,
    dst: Ref,
    force: bool,
    on_progress: Callable[[str], None] = lambda s: None,
) -> tuple[Ref, int]:
    """Copy `src` to `dst`; returns the destination at the digest and the bytes sent."""
    got = src_client.get_manifest(src.repository, src.reference)
    if got is None:
        raise RegistryError(f"{src}: no such manifest in the registry.")
    data, media_type, digest = got
    if dst.digest and dst.digest != digest:
        raise InputError(f"DST_REF {dst}: names {dst.digest}, but {src} is {digest}.")
    if dst.tag and not dst.digest and not force:
        current = dst_client.get_manifest(dst.repository, dst.tag)
        if current is not None and current[2] != digest:
            raise InputError(
                f"DST_REF {dst}: the tag already names {current[2]}; "
                f"give --force to move it to {digest}."
            )
    sent = _copy_manifest(
        src_client, src, dst_client, dst, data, media_type or oci.MANIFEST, on_progress
    )
    entries = referrers.listed(src_client, src.repository, digest)
    copied, api = [], False
    for entry in entries:
        ref_got = src_client.get_manifest(src.repository, entry["digest"])
        if ref_got is None:
            continue  # listed but gone at the source: nothing to carry
        on_progress(f"referrer {entry.get('artifactType', '?')}")
        sent += _copy_blobs(src_client, src, dst_client, dst, ref_got[0])
        r = dst_client.put_manifest(
            dst.repository, entry["digest"], ref_got[0], ref_got[1] or oci.MANIFEST
        )
        api = api or r.headers.get("OCI-Subject") == digest
        copied.append(entry)
    referrers.record(dst_client, dst.repository, digest, copied, api)
    return dst.at(digest), sent


def _copy_manifest(
    src_client: Client,
    src: Ref,
    dst_client: Client,
    dst: Ref,
    data: bytes,
    media_type: str,
    on_progress: Callable[[str], None],
) -> int:
    sent = _copy_blobs(src_client, src, dst_client, dst, data, on_progress)
    dst_client.put_manifest(
        dst.repository,
        dst.tag if dst.tag and not dst.digest else oci.digest_of(data),
        data,
        media_type,
    )
    return sent


def _copy_blobs(
    src_client: Client,
    src: Ref,
    dst_client: Client,
    dst: Ref,
    data: bytes,
    on_progress: Callable[[str], None] = lambda s: None,
) -> int:
    try:
        doc = oci.parse_manifest(data, f"{src}'s manifest")
        blobs: list[dict[str, Any]] = [
            doc["config"],
            *oci.descriptors(doc, "layers", f"{src}'s manifest"),
        ]
    except (ValueError, KeyError, TypeError):
        raise RegistryError(f"{src}: not an image manifest baker can copy.") from None
    sent = 0
    same_host = src_client.host == dst_client.host
    for desc in blobs:
        digest = desc["digest"]
        if dst_client.has_blob(dst.repository, digest):
            continue
        if same_host and dst_client.mount_blob(dst.repository, digest, src.repository):
            on_progress(f"mounted {digest[:19]} from {src.repository}")
            continue
        on_progress(f"copying {digest[:19]} ({desc['size']} bytes)")
        with tempfile.TemporaryDirectory(prefix="baker-promote-") as tmp:
            path = Path(tmp) / "blob"
            src_client.fetch_blob(src.repository, desc, path)
            sent += dst_client.upload_file(dst.repository, path, digest)
    return sent

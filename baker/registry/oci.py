"""The OCI documents baker writes and reads: descriptors, image manifests, image indexes.

An artifact directory travels as one image manifest (artifactType baker's own) whose config
is build.json and whose layers are the disk and the files it is checked against, plus one
referrer manifest (`subject` = that manifest) per piece of evidence a registry user attaches
and looks up by type: the two SBOMs, the provenance envelope and the signature.

Every document is serialized canonically (sorted keys, no spaces) from the artifact's own
bytes and its recorded source date, so the same artifact always gives the same digests.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from baker import artifact

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
EMPTY = "application/vnd.oci.empty.v1+json"
EMPTY_BLOB = b"{}"

ARTIFACT_TYPE = "application/vnd.baker.image.v1"
CONFIG = "application/vnd.baker.build.v1+json"  # build.json
DISK = "application/vnd.baker.disk.qcow2"
FILE = "application/vnd.baker.file.v1"  # any other file of the artifact

# The evidence that goes up as referrers: file name -> its artifact type (the registries'
# and tools' usual types where there is one).
REFERRERS = {
    artifact.SBOM_CDX: "application/vnd.cyclonedx+json",
    artifact.SBOM_SPDX: "application/spdx+json",
    # Also CycloneDX, but not an SBOM: a type of its own, so a registry user can ask for it.
    artifact.VULNS: "application/vnd.baker.vulnerabilities.v1+json",
    artifact.DSSE: "application/vnd.dsse.envelope.v1+json",
    artifact.SIGNATURE: "application/vnd.baker.signature.v1",
}
LAYER_TYPES = {
    artifact.IMAGE: DISK,
    artifact.BOOT: "application/vnd.baker.boot.v1+json",
    artifact.JUNIT: "application/vnd.baker.junit+xml",
    artifact.PROVENANCE: "application/vnd.in-toto+json",
    artifact.SUMS: "text/plain",
}

TITLE = "org.opencontainers.image.title"
CREATED = "org.opencontainers.image.created"
DESCRIPTION = "org.opencontainers.image.description"
BAKER_VERSION = "dev.baker.version"
BAKER_RECIPE = "dev.baker.recipe"
BAKER_DIGEST = "dev.baker.image.digest"

MAX_MANIFEST = 4 * 1024 * 1024  # what distribution accepts; more from a server is refused


def canonical(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def digest_of(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def descriptor(media_type: str, digest: str, size: int, **extra: Any) -> dict[str, Any]:
    return {
        "mediaType": media_type,
        "digest": digest,
        "size": size,
        **{k: v for k, v in extra.items() if v},
    }


def created(source_date_epoch: int | None) -> str:
    """The artifact's source date as RFC 3339 (the Unix epoch when a build recorded none)."""
    return datetime.fromtimestamp(source_date_epoch or 0, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def image_manifest(
    config: dict[str, Any],
    layers: list[dict[str, Any]],
    annotations: dict[str, str],
    artifact_type: str | None = ARTIFACT_TYPE,
    subject: dict[str, Any] | None = None,
) -> bytes:
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": config,
        "layers": layers,
    }
    if artifact_type:
        doc["artifactType"] = artifact_type
    if annotations:
        doc["annotations"] = annotations
    if subject:
        doc["subject"] = subject
    return canonical(doc)


def referrers_index(entries: list[dict[str, Any]]) -> bytes:
    """An image index of referrer descriptors, ordered by digest so it is the same each time."""
    unique = {e["digest"]: e for e in entries}
    return canonical(
        {"schemaVersion": 2, "mediaType": INDEX, "manifests": [unique[d] for d in sorted(unique)]}
    )


def referrers_tag(subject_digest: str) -> str:
    """The tag the OCI 1.1 referrers tag schema keeps a subject's referrers under."""
    algorithm, _, hexdigest = subject_digest.partition(":")
    return f"{algorithm}-{hexdigest}"


def parse_manifest(data: bytes, where: str) -> dict[str, Any]:
    """An image manifest or index; ValueError saying what is wrong with it."""
    try:
        doc = json.loads(data)
    except ValueError:
        raise ValueError(f"{where} is not JSON") from None
    if not isinstance(doc, dict) or doc.get("schemaVersion") != 2:
        raise ValueError(f"{where} is not an OCI manifest (schemaVersion 2)")
    return doc


def descriptors(doc: dict[str, Any], key: str, where: str) -> list[dict[str, Any]]:
    """The well-formed descriptors under `key` ('layers' or 'manifests'); ValueError otherwise."""
    items = doc.get(key)
    if not isinstance(items, list):
        raise ValueError(f"{where} has no {key} list")
    for d in items:
        if not (
            isinstance(d, dict)
            and isinstance(d.get("digest"), str)
            and isinstance(d.get("size"), int)
            and d["size"] >= 0
        ):
            raise ValueError(f"{where} holds a malformed descriptor in {key}")
    return items

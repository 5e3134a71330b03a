"""Revocation statements in a registry: each is a referrer of the revoked image's manifest
(artifactType baker's revocation type, its one layer the DSSE envelope), and also listed in
the repository's `baker-revocations` index, so that a pull finds the revocation of an
ancestor it knows only by image digest, and `baker revocations export` finds them all."""

from __future__ import annotations

import json
from typing import Any

from baker.evidence import revocation
from baker.registry import oci, referrers
from baker.registry.client import Client, RegistryError

INDEX_TAG = "baker-revocations"
_MAX_ENVELOPE = 1 << 20


def attach(
    client: Client,
    repo: str,
    subject: dict[str, Any],
    image: str,
    envelope: dict[str, Any],
    created: str,
) -> str:
    """Put the statement up as a referrer of `subject` (a manifest descriptor); returns the
    referrer's digest. Attaching the same statement twice changes nothing."""
    body = json.dumps(envelope, sort_keys=True, separators=(",", ":")).encode()
    blob = client.upload_bytes(repo, body)
    empty = client.upload_bytes(repo, oci.EMPTY_BLOB)
    notes = {oci.CREATED: created, oci.TITLE: revocation.FILE, oci.BAKER_DIGEST: image}
    layer = oci.descriptor(revocation.MEDIA_TYPE, blob["digest"], blob["size"],
                           annotations={oci.TITLE: revocation.FILE})  # fmt: skip
    manifest = oci.image_manifest(
        oci.descriptor(oci.EMPTY, empty["digest"], empty["size"]),
        [layer],
        notes,
        artifact_type=revocation.MEDIA_TYPE,
        subject=subject,
    )
    digest = oci.digest_of(manifest)
    r = client.put_manifest(repo, digest, manifest, oci.MANIFEST)
    entry = oci.descriptor(oci.MANIFEST, digest, len(manifest),
                           artifactType=revocation.MEDIA_TYPE, annotations=notes)  # fmt: skip
    referrers.record(
        client, repo, subject["digest"], [entry], r.headers.get("OCI-Subject") == subject["digest"]
    )
    _add_to_index(client, repo, entry)
    return digest


def _add_to_index(client: Client, repo: str, entry: dict[str, Any]) -> None:
    old = client.get_manifest(repo, INDEX_TAG)
    kept = _entries(old[0], f"{repo}:{INDEX_TAG}") if old else []
    index = oci.referrers_index([*kept, entry])
    if old is None or old[0] != index:
        client.put_manifest(repo, INDEX_TAG, index, oci.INDEX)


def _entries(data: bytes, where: str) -> list[dict[str, Any]]:
    try:
        return oci.descriptors(oci.parse_manifest(data, where), "manifests", where)
    except ValueError as e:
        raise RegistryError(f"{e}.") from None


def of_repository(client: Client, repo: str) -> list[tuple[object, str]]:
    """Every statement the repository's index lists, each with where it came from."""
    got = client.get_manifest(repo, INDEX_TAG)
    if got is None:
        return []
    entries = _entries(got[0], f"{client.host}/{repo}:{INDEX_TAG}")
    return [_statement(client, repo, e["digest"]) for e in entries]


def of_manifest(client: Client, repo: str, subject: str) -> list[tuple[object, str]]:
    """The statements attached to one manifest as referrers."""
    return [
        _statement(client, repo, e["digest"])
        for e in referrers.listed(client, repo, subject)
        if e.get("artifactType") == revocation.MEDIA_TYPE
    ]


def of_image(client: Client, repo: str, subject: str) -> list[tuple[object, str]]:
    """Both: the manifest's own referrers and the repository's index (its ancestors')."""
    found = {where: e for e, where in [*of_manifest(client, repo, subject),
                                       *of_repository(client, repo)]}  # fmt: skip
    return [(e, where) for where, e in found.items()]


def _statement(client: Client, repo: str, digest: str) -> tuple[object, str]:
    where = f"{client.host}/{repo}@{digest}"
    got = client.get_manifest(repo, digest)
    if got is None:
        raise RegistryError(f"{where}: a listed revocation is missing from the registry.")
    try:
        layers = oci.descriptors(oci.parse_manifest(got[0], where), "layers", where)
    except ValueError as e:
        raise RegistryError(f"{e}.") from None
    if len(layers) != 1 or layers[0].get("mediaType") != revocation.MEDIA_TYPE:
        raise RegistryError(f"{where}: not a revocation (one layer of its type).")
    return _envelope(client, repo, layers[0], where), where


def _envelope(client: Client, repo: str, desc: dict[str, Any], where: str) -> object:
    data = client.fetch_bytes(repo, desc, _MAX_ENVELOPE, f"{where}'s statement")
    try:
        return json.loads(data)
    except ValueError:
        return {}  # reported as not a revocation when it is read

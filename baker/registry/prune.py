"""`baker prune REPO`: the repository's baker images decided by the retention rules
(baker.lifecycle.retention), and the ones not kept deleted with their evidence.

A registry lists only tags, so the candidates are the baker images some tag points to; each
one's build.json (its config, a small blob) says its name, when it was built and its
ancestors. Revocation statements are never deleted: a revocation outlives its image, since
copies of the image may live on elsewhere. The registry frees the blobs in its own garbage
collection (distribution: `registry garbage-collect`)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urljoin

from baker import artifact
from baker.evidence import revocation
from baker.lifecycle import retention
from baker.registry import oci, referrers, revocations
from baker.registry.client import Client, RegistryError, read_limited

_MAX_CONFIG = 1 << 20
_MAX_TAGS = 100_000


@dataclass(frozen=True)
class Image:
    digest: str  # the manifest's
    candidate: retention.Candidate


def tags(client: Client, repo: str) -> list[str]:
    """Every tag of `repo`, following the registry's pages."""
    url: str | None = client.url(repo, "tags/list", n="1000")
    found: list[str] = []
    while url and len(found) < _MAX_TAGS:
        r = client.request("GET", url, stream=True)
        with r:
            if r.status_code == 404:
                raise RegistryError(f"{client.host}/{repo}: no such repository.")
            if r.status_code != 200:
                raise RegistryError(f"{client.host}/{repo}: listing tags failed ({r.status_code}).")
            data = read_limited(r, oci.MAX_MANIFEST, f"{client.host}/{repo} tags")
        try:
            found += [str(t) for t in json.loads(data).get("tags") or []]
        except (ValueError, AttributeError):
            raise RegistryError(f"{client.host}/{repo}: its tag list is not JSON.") from None
        link = r.headers.get("Link", "")
        url = urljoin(url, link.split(";")[0].strip("<> ")) if 'rel="next"' in link else None
    return found


def _skipped(tag: str) -> bool:
    # The referrers tag schema's indexes and baker's revocation index are not images.
    return tag.startswith("sha256-") or tag == revocations.INDEX_TAG


def images(client: Client, repo: str, on_progress: Callable[[str], None]) -> list[Image]:
    """The baker images tags point to, one per manifest digest with all its tags."""
    by_digest: dict[str, list[str]] = {}
    manifests: dict[str, dict[str, Any]] = {}
    for tag in tags(client, repo):
        if _skipped(tag):
            continue
        got = client.get_manifest(repo, tag)
        if got is None:
            continue  # deleted since it was listed
        try:
            doc = oci.parse_manifest(got[0], f"{repo}:{tag}")
        except ValueError:
            continue
        if doc.get("artifactType") != oci.ARTIFACT_TYPE:
            on_progress(f"{tag}: not a baker image, left alone")
            continue
        by_digest.setdefault(got[2], []).append(tag)
        manifests[got[2]] = doc
    found = []
    for digest, doc in manifests.items():
        where = f"{client.host}/{repo}@{digest}"
        config = client.fetch_bytes(repo, doc["config"], _MAX_CONFIG, f"{where}'s build.json")
        try:
            record = artifact.BuildRecord.model_validate_json(config)
        except ValueError:
            raise RegistryError(f"{where}: its build.json is not a baker build record.") from None
        built = record.finished or record.started or "1970-01-01T00:00:00+00:00"
        candidate = retention.Candidate(
            key=digest,
            name=record.recipe.name,
            image=record.image.digest or digest,
            built=datetime.fromisoformat(built).astimezone(UTC),
            tags=tuple(sorted(by_digest[digest])),
            ancestors=tuple(d for _, d in revocation.ancestry(record.parent)),
        )
        found.append(Image(digest, candidate))
    return found


def delete(client: Client, repo: str, digest: str) -> int:
    """Delete a manifest and its evidence referrers (not revocations); returns how many
    manifests went. Tags pointing to it go with it."""
    gone = 0
    for entry in referrers.listed(client, repo, digest):
        if entry.get("artifactType") != revocation.MEDIA_TYPE:
            gone += _delete(client, repo, entry["digest"])
    index = client.get_manifest(repo, oci.referrers_tag(digest))
    if index is not None:
        gone += _delete(client, repo, index[2])
    return gone + _delete(client, repo, digest)


def _delete(client: Client, repo: str, digest: str) -> int:
    r = client.request("DELETE", client.url(repo, f"manifests/{digest}"))
    if r.status_code == 404:
        return 0
    if r.status_code == 405:
        raise RegistryError(
            f"{client.host}/{repo}: the registry does not allow deleting manifests "
            "(distribution: storage.delete.enabled: true)."
        )
    if r.status_code not in (200, 202):
        raise RegistryError(f"{client.host}/{repo}: deleting {digest} failed ({r.status_code}).")
    return 1

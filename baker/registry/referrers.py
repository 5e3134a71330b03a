"""A manifest's referrers: listed and recorded the OCI 1.1 way, with the fallback the spec
gives for registries without the referrers API (the `sha256-<hex>` tag holding an index).

oras-py has neither; this is the part baker adds for them."""

from __future__ import annotations

from typing import Any

from baker.registry import oci
from baker.registry.client import Client, RegistryError, read_limited


def listed(client: Client, repo: str, subject: str) -> list[dict[str, Any]]:
    """The descriptors of `subject`'s referrers, from the referrers API or else its tag."""
    r = client.request(
        "GET", client.url(repo, f"referrers/{subject}"), headers={"Accept": oci.INDEX}
    )
    if r.status_code == 200 and r.headers.get("Content-Type", "").startswith(oci.INDEX):
        data = read_limited(r, oci.MAX_MANIFEST, f"{client.host}/{repo} referrers of {subject}")
    else:
        got = client.get_manifest(repo, oci.referrers_tag(subject))
        if got is None:
            return []
        data = got[0]
    try:
        index = oci.parse_manifest(data, "the referrers index")
        return oci.descriptors(index, "manifests", "the referrers index")
    except ValueError as e:
        raise RegistryError(f"{client.host}/{repo}: {e}.") from None


def record(
    client: Client, repo: str, subject: str, entries: list[dict[str, Any]], api: bool
) -> None:
    """Record referrers in the tag schema's index, keeping other tools' entries; nothing to
    do when the registry answered their puts with OCI-Subject (it has the API)."""
    if api or not entries:
        return
    tag = oci.referrers_tag(subject)
    old = client.get_manifest(repo, tag)
    kept: list[dict[str, Any]] = []
    if old is not None:
        try:
            kept = oci.descriptors(oci.parse_manifest(old[0], "index"), "manifests", "index")
        except ValueError:
            kept = []  # not an index: the tag is taken over, as the spec says
    index = oci.referrers_index(kept + entries)
    if old is None or old[0] != index:
        client.put_manifest(repo, tag, index, oci.INDEX)

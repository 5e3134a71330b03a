"""`baker pull REF --into DIR --pub KEY`: an artifact from a registry, checked before it lands.

Every blob is hashed as it streams (baker.registry.client), the files are laid out in a
staging directory beside DIR, everything `baker verify` checks must hold (the signature and
provenance against the user's key among them), and only then is the staging directory
renamed to DIR. On any failure DIR is not touched and the staging directory is gone.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from baker import artifact
from baker.errors import BuildError, InputError
from baker.evidence import verify
from baker.registry import oci, referrers
from baker.registry.client import Client, RegistryError
from baker.registry.ref import Ref

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_MAX_FILES = 64


def check_target(into: Path) -> None:
    """DIR must not exist yet (or be empty): a pull never mixes into or replaces files."""
    if into.exists() and (not into.is_dir() or any(into.iterdir())):
        raise InputError(
            f"--into {into}: already exists and is not empty; pull into a new directory."
        )
    if not into.parent.is_dir():
        raise InputError(f"--into {into}: its parent directory does not exist.")


def pull(
    client: Client,
    ref: Ref,
    into: Path,
    pub: Path,
    on_progress: Callable[[str], None] = lambda s: None,
    on_bytes: Callable[[int], None] = lambda n: None,
) -> str:
    """Fetch, check and place the artifact; returns the manifest digest."""
    repo = ref.repository
    got = client.get_manifest(repo, ref.reference)
    if got is None:
        raise RegistryError(f"{ref}: no such manifest in the registry.")
    data, _, digest = got
    manifest = _baker_manifest(data, ref)
    layers = oci.descriptors(manifest, "layers", f"{ref}'s manifest")
    wanted: list[tuple[str, dict[str, Any]]] = [(artifact.BUILD, manifest["config"])]
    wanted += [(_title(d, ref), d) for d in layers]
    wanted += _evidence(client, repo, digest, ref)
    names = [n for n, _ in wanted]
    if len(names) > _MAX_FILES:
        raise RegistryError(f"{ref}: {len(names)} files is more than an artifact holds.")
    if dupes := sorted({n for n in names if names.count(n) > 1}):
        raise RegistryError(
            f"{ref}: more than one {dupes[0]} (layers or referrers); refusing to choose."
        )
    if artifact.IMAGE not in names:
        raise RegistryError(f"{ref}: the manifest holds no {artifact.IMAGE}.")

    need = sum(int(d["size"]) for _, d in wanted)
    free = shutil.disk_usage(into.parent).free
    if need > free:
        # Said before a byte is fetched: the descriptors' sizes are what the blobs may be.
        raise BuildError(
            f"{into.parent} has {free / 1e6:.0f} MB free and {ref} needs {need / 1e6:.0f} MB."
        )
    staging = Path(tempfile.mkdtemp(prefix=f".{into.name}.pull-", dir=into.parent))
    try:
        hashes = {}
        for name, desc in wanted:
            on_progress(f"{name} ({desc['size']} bytes)")
            hashes[name] = client.fetch_blob(repo, desc, staging / name, on_bytes)
        findings = verify.verify(staging, pub, hashes)
        if failed := [f for f in findings if f.ok is False]:
            raise RegistryError(
                f"{ref}: refused, it does not verify: {failed[0].name}: {failed[0].detail}."
            )
        for f in staging.iterdir():
            f.chmod(0o644)
        staging.chmod(0o755)
        if into.exists():
            into.rmdir()  # checked empty before anything was fetched
        staging.rename(into)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return digest


def _baker_manifest(data: bytes, ref: Ref) -> dict[str, Any]:
    try:
        doc = oci.parse_manifest(data, f"{ref}'s manifest")
    except ValueError as e:
        raise RegistryError(f"{e}.") from None
    if doc.get("mediaType") == oci.INDEX or "manifests" in doc:
        raise RegistryError(
            f"{ref} is an image index, not a baker image; pull one of its manifests by digest."
        )
    config = doc.get("config")
    if (
        doc.get("artifactType") != oci.ARTIFACT_TYPE
        or not isinstance(config, dict)
        or config.get("mediaType") != oci.CONFIG
    ):
        raise RegistryError(
            f"{ref} is not a baker image (artifactType {doc.get('artifactType')!r})."
        )
    oci.descriptors({"c": [config]}, "c", f"{ref}'s config")
    return doc


def _title(desc: dict[str, Any], ref: Ref) -> str:
    """The file name a layer or referrer names; only plain names (no paths, nothing hidden)."""
    name = (desc.get("annotations") or {}).get(oci.TITLE)
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name in (artifact.BUILD,):
        raise RegistryError(f"{ref}: a layer is titled {name!r}, not a plain artifact file name.")
    return name


def _evidence(
    client: Client, repo: str, subject: str, ref: Ref
) -> list[tuple[str, dict[str, Any]]]:
    """(file name, blob descriptor) of each baker evidence referrer of `subject`; other
    tools' referrers (cosign, notation) are left alone."""
    found = []
    for entry in referrers.listed(client, repo, subject):
        kind = entry.get("artifactType")
        if kind not in oci.REFERRERS.values():
            continue
        got = client.get_manifest(repo, entry["digest"])
        if got is None:
            raise RegistryError(f"{ref}: referrer {entry['digest']} is listed but missing.")
        try:
            doc = oci.parse_manifest(got[0], f"referrer {entry['digest']}")
            layers = oci.descriptors(doc, "layers", f"referrer {entry['digest']}")
        except ValueError as e:
            raise RegistryError(f"{ref}: {e}.") from None
        if (doc.get("subject") or {}).get("digest") != subject or len(layers) != 1:
            raise RegistryError(f"{ref}: referrer {entry['digest']} is not about this manifest.")
        name = _title(layers[0], ref)
        if oci.REFERRERS.get(name) != kind:
            raise RegistryError(f"{ref}: referrer {entry['digest']} of type {kind} carries {name}.")
        found.append((name, layers[0]))
    return found

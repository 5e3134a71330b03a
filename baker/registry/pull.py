"""`baker pull REF --into DIR --pub KEY`: an artifact from a registry, checked before it lands.

Every blob is hashed as it streams (baker.registry.client), the files are laid out in a
staging directory beside DIR, everything `baker verify` checks must hold (the signature and
provenance against the user's key among them), and only then is the staging directory
renamed to DIR. On any failure DIR is not touched and the staging directory is gone.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from baker import artifact
from baker.errors import BakerError, BuildError, InputError
from baker.evidence import revocation, signing, verify
from baker.registry import oci, referrers, revocations
from baker.registry.client import Client, RegistryError
from baker.registry.ref import Ref, parse

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
    manifest = baker_manifest(data, ref)
    # A revoked image is refused before a byte of it is fetched; its ancestors once its
    # build.json (the first file) names them.
    notes = manifest.get("annotations") or {}
    title, image = str(notes.get(oci.TITLE, ref)), str(notes.get(oci.BAKER_DIGEST, ""))
    statements = revocations.of_image(client, repo, digest)
    _refuse_revoked(ref, title, image, [], statements, pub, on_progress)
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
            if name == artifact.BUILD:
                statements += _lineage(client, ref, staging, title, image, statements, pub)
        findings = verify.verify(staging, pub, hashes, statements=statements)
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


def _refuse_revoked(
    ref: Ref,
    name: str,
    image: str,
    ancestors: list[tuple[str, str]],
    statements: list[tuple[object, str]],
    pub: Path,
    on_progress: Callable[[str], None] = lambda s: None,
) -> None:
    if not statements:
        return
    found, ignored = revocation.collect(statements, [signing.load_public_key(pub)])
    for line in ignored:
        on_progress(f"ignored a revocation: {line}")
    try:
        revocation.check(name, image, ancestors, found)
    except revocation.Revoked as e:
        raise revocation.Revoked(f"{ref}: refused, {e}.") from None


def _lineage(
    client: Client,
    ref: Ref,
    staging: Path,
    name: str,
    image: str,
    statements: list[tuple[object, str]],
    pub: Path,
) -> list[tuple[object, str]]:
    """Refuse an image whose ancestor is revoked: in this repository, or in the one its
    parent was pulled from when that is on the same registry. Returns the statements read."""
    try:
        parent = artifact.read_record(staging).parent
    except BakerError:
        return []  # a malformed build.json fails verification, said there
    ancestors = revocation.ancestry(parent)
    more: list[tuple[object, str]] = []
    if parent is not None and ancestors:
        with contextlib.suppress(InputError):
            source = parse(parent.source)
            if source.host == ref.host and source.repository != ref.repository:
                more = revocations.of_repository(client, source.repository)
    _refuse_revoked(ref, name, image, ancestors, [*statements, *more], pub)
    return more


def baker_manifest(data: bytes, ref: Ref) -> dict[str, Any]:
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

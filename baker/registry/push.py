"""`baker push ARTIFACT_DIR REF`: an artifact directory into an OCI registry.

The image manifest carries build.json as its config and the disk plus the files it is
checked against as layers; each piece of evidence goes up as a referrer of it (baker.registry
.oci). Blobs the registry has are not sent again, and every document is canonical, so the
same artifact pushed twice sends nothing and yields the same manifest digest.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from baker import artifact
from baker.errors import BakerError, InputError
from baker.evidence import revocation
from baker.hashing import sha256_file
from baker.registry import oci, referrers
from baker.registry.client import Client, DigestMismatch
from baker.registry.ref import Ref


@dataclass(frozen=True)
class Pushed:
    ref: Ref  # the repository at the manifest's digest
    sent: int  # bytes uploaded (0 when the registry had every blob)
    referrers: int


@dataclass(frozen=True)
class ArtifactFile:
    name: str
    path: Path
    digest: str
    size: int


def artifact_files(directory: Path) -> list[ArtifactFile]:
    """The artifact's files, each with the digest SHA256SUMS gives it. They are not hashed
    here: each is hashed as it is sent, and one that does not match is refused then (a disk
    is read once, and not at all when the registry has it already)."""
    artifact.image_dir(directory)
    if (directory / revocation.FILE).exists():
        raise InputError(
            f"{directory}: revoked ({revocation.FILE}); a revoked image is not pushed."
        )
    try:
        sums = artifact.read_sums(directory)
    except BakerError as e:  # a missing or malformed SHA256SUMS is the user's input at fault
        raise InputError(f"{directory}: {e}") from None
    files = []
    for path in sorted(directory.iterdir()):
        if not path.is_file() or path.name.startswith("."):
            continue
        if path.name == artifact.SUMS:
            hexdigest = sha256_file(path)
        elif path.name in sums:
            hexdigest = sums[path.name]
        else:
            raise InputError(f"{path}: not listed in SHA256SUMS; run `baker verify {directory}`.")
        files.append(ArtifactFile(path.name, path, f"sha256:{hexdigest}", path.stat().st_size))
    if missing := sorted(set(sums) - {f.name for f in files}):
        raise InputError(f"{directory}: SHA256SUMS lists {missing[0]}, which is not there.")
    return files


def manifest_for(
    directory: Path, files: list[ArtifactFile]
) -> tuple[bytes, list[ArtifactFile], list[ArtifactFile]]:
    """(the image manifest, its layer files, the referrer files) of an artifact."""
    record = artifact.read_record(directory)
    by_name = {f.name: f for f in files}
    config = by_name[artifact.BUILD]
    layers = [f for f in files if f.name not in oci.REFERRERS and f.name != artifact.BUILD]
    # The disk first: it is what a registry UI and KubeVirt-minded tools look at.
    layers.sort(key=lambda f: (f.name != artifact.IMAGE, f.name))
    annotations = {
        oci.CREATED: oci.created(record.source_date_epoch),
        oci.TITLE: record.recipe.name,
        oci.BAKER_VERSION: record.baker_version,
        oci.BAKER_RECIPE: f"{record.recipe.file}@{record.recipe.digest}",
        oci.BAKER_DIGEST: by_name[artifact.IMAGE].digest,
    }
    manifest = oci.image_manifest(
        oci.descriptor(oci.CONFIG, config.digest, config.size),
        [_layer(f) for f in layers],
        annotations,
    )
    return manifest, layers, [f for f in files if f.name in oci.REFERRERS]


def _layer(f: ArtifactFile, media_type: str | None = None) -> dict[str, Any]:
    kind = media_type or oci.LAYER_TYPES.get(f.name, oci.FILE)
    return oci.descriptor(kind, f.digest, f.size, annotations={oci.TITLE: f.name})


def push(
    client: Client,
    directory: Path,
    ref: Ref,
    on_progress: Callable[[str], None] = lambda s: None,
    on_bytes: Callable[[int], None] = lambda n: None,
    files: list[ArtifactFile] | None = None,
) -> Pushed:
    """Push the artifact at `directory`; `files` is its artifact_files() when the caller
    already read them (the command line, for its progress bar's total)."""
    files = files if files is not None else artifact_files(directory)
    manifest, layers, evidence = manifest_for(directory, files)
    repo = ref.repository
    sent = 0
    config = next(f for f in files if f.name == artifact.BUILD)
    for f in [config, *layers, *evidence]:
        on_progress(f"{f.name} ({f.size} bytes)")
        try:
            sent += client.upload_file(repo, f.path, f.digest, on_bytes)
        except DigestMismatch:
            raise InputError(
                f"{f.path}: does not match SHA256SUMS; run `baker verify {directory}`."
            ) from None
    digest = oci.digest_of(manifest)
    if ref.digest and ref.digest != digest:
        raise InputError(f"REF {ref}: this artifact's manifest is {digest}, not {ref.digest}.")
    client.put_manifest(repo, ref.reference, manifest, oci.MANIFEST)
    subject = oci.descriptor(oci.MANIFEST, digest, len(manifest))
    created = oci.created(artifact.read_record(directory).source_date_epoch)
    empty = client.upload_bytes(repo, oci.EMPTY_BLOB)
    entries, api = [], False
    for f in evidence:
        kind = oci.REFERRERS[f.name]
        body = oci.image_manifest(
            oci.descriptor(oci.EMPTY, empty["digest"], empty["size"]),
            [_layer(f, kind)],
            {oci.CREATED: created, oci.TITLE: f.name},
            artifact_type=kind,
            subject=subject,
        )
        r = client.put_manifest(repo, oci.digest_of(body), body, oci.MANIFEST)
        api = api or r.headers.get("OCI-Subject") == digest
        entries.append(
            oci.descriptor(
                oci.MANIFEST,
                oci.digest_of(body),
                len(body),
                artifactType=kind,
                annotations={oci.CREATED: created, oci.TITLE: f.name},
            )
        )
    referrers.record(client, repo, digest, entries, api)
    return Pushed(ref.at(digest), sent, len(entries))

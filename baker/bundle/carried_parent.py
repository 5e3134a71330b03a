"""A child's parent image in an air-gapped bundle (`export --with-sources` of a child), both
sides. Exported: the parent's artifact as the child's build found it (verified again with
the recipe's trusted key, and the same digest the child recorded), under parent/NAME/, with
that key as parent/trust.pub. Imported: the parent verified with the carried key, and the key,
the image and the provenance tied to what the child's signed provenance says of its parent;
`rebuild --check` then builds the child on it (baker.artifact.carried_in)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from baker.artifact import CARRIED, CARRIED_KEY, IMAGE, PROVENANCE, Carried, read_sums
from baker.bundle.layout import Member, artifact_members
from baker.errors import BuildError, InputError
from baker.evidence import signing
from baker.hashing import sha256_file


def carry(found: Carried, name: str, digest: str) -> tuple[list[Member], dict[str, Any]]:
    """The members that carry the child's parent `name`, image `digest` (found and verified
    as the child's build found it, that digest checked: baker.build.rebuild.parent_as_built),
    and what the index says of them."""
    directory = f"{CARRIED}/{name}"
    members = artifact_members(found.artifact, directory, read_sums(found.artifact))
    key = found.key
    members.append(
        Member(f"{CARRIED}/{CARRIED_KEY}", sha256_file(key), key.stat().st_size, path=key)
    )
    where = {"name": name, "digest": digest, "dir": directory,
             "key": f"{CARRIED}/{CARRIED_KEY}"}  # fmt: skip
    return members, where


def verify_carried(tree: Path, where: dict[str, Any], statement: dict[str, Any]) -> str:
    """The carried parent checked whole with the carried key, which must be the signer the
    child's signed provenance names, as its image and provenance must be the ones it names."""
    from baker.evidence.verify import verify

    deps = statement["predicate"]["buildDefinition"]["resolvedDependencies"]
    named = next(d for d in deps if d["name"] == "parent-image")
    notes = named["annotations"]
    name = where["name"]
    if where["dir"] != f"{CARRIED}/{name}" or where["key"] != f"{CARRIED}/{CARRIED_KEY}":
        raise BuildError(f"the carried parent {name} is not where a bundle carries it.")
    artifact, key = tree / where["dir"], tree / where["key"]
    try:
        signer = signing.fingerprint(signing.load_public_key(key))
    except InputError:
        raise BuildError(f"the carried {where['key']} is not a valid public key.") from None
    if signer != notes["signer"]:
        raise BuildError(
            f"the carried {where['key']} (key {signer[:16]}…) is not the key that signed the "
            f"parent {name} (key {str(notes['signer'])[:16]}…), as the provenance records."
        )
    failed = next((f for f in verify(artifact, key) if f.ok is not True), None)
    if failed is not None:
        raise BuildError(f"the carried parent {name}: {failed.name}: {failed.detail}.")
    # verify() hashed the image against its SHA256SUMS: the listed digest is the image's.
    digest = read_sums(artifact)[IMAGE]
    if name != notes["name"] or digest != named["digest"]["sha256"]:
        raise BuildError(
            f"the carried parent {name} sha256:{digest} is not the parent the provenance names."
        )
    if f"sha256:{sha256_file(artifact / PROVENANCE)}" != notes["provenanceDigest"]:
        raise BuildError(f"the carried parent {name}'s provenance is not the one recorded.")
    return f"ok   parent: {name} sha256:{digest[:12]}…, verified with the key that signed it"

"""A child's parent image (the recipe's base.image): found, and verified with the trusted key
before anything starts, as `baker verify --pub KEY` would (digests, SBOMs, provenance,
signature); its lineage recorded for the child's evidence.

Everything wrong with a parent is the recipe's to fix, so each refusal is an InputError (exit
2) naming the recipe's file, line and field."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from baker.artifact import IMAGE, PROVENANCE, Ancestor, BuildRecord, ParentRecord, read_record
from baker.errors import BakerError, InputError
from baker.evidence import signing
from baker.evidence.verify import verify
from baker.hashing import sha256_file
from baker.recipe.spec import Spec

TRUST_ENV = "BAKER_TRUST_KEY"


@dataclass(frozen=True)
class Parent:
    artifact: Path  # the verified artifact directory
    record: BuildRecord  # its build.json
    pin: ParentRecord  # what the child records of it

    @property
    def image(self) -> Path:
        return self.artifact / IMAGE


def trust_key(spec: Spec) -> Path | None:
    """The key a parent must be signed by: the recipe's base.trust, else $BAKER_TRUST_KEY."""
    if spec.trust is not None:
        return spec.trust
    named = os.environ.get(TRUST_ENV)
    return Path(named) if named else None


def resolve(spec: Spec) -> Parent | None:
    """The recipe's parent image, verified; None for a recipe without one."""
    base = spec.recipe.base
    if base.image is None or spec.parent is None:
        return None
    here = spec.where("base.image")
    if spec.recipe.backend.type != "libvirt":
        raise InputError(
            f"{here}: base.image: a parent image is a local disk; the {spec.recipe.backend.type} "
            "backend starts from its own base image."
        )
    if not (spec.parent / IMAGE).is_file():
        raise InputError(
            f"{here}: base.image: no baker artifact at {spec.parent} (it holds no {IMAGE})."
        )
    key = trust_key(spec)
    if key is None:
        raise InputError(
            f"{spec.where('base')}: base.trust: a parent image is trusted by the key that signed "
            f"it; name its public key (trust: FILE, or ${TRUST_ENV})."
        )
    if not key.is_file():
        raise InputError(f"{spec.where('base.trust')}: base.trust: no such key file {key}.")
    try:
        record = read_record(spec.parent)
    except InputError as e:
        raise InputError(f"{here}: base.image: {e}") from None
    pinned = f"sha256:{base.sha256}"
    if record.image.digest != pinned:
        raise InputError(
            f"{spec.where('base.sha256')}: base.sha256: the parent {spec.parent} is "
            f"{record.image.digest}, not the pinned {pinned}."
        )
    try:
        findings = verify(spec.parent, key)
    except BakerError as e:
        raise InputError(f"{spec.where('base.trust')}: base.trust: {e}") from None
    failed = next((f for f in findings if f.ok is not True), None)
    if failed is not None:
        raise InputError(
            f"{here}: base.image: the parent {spec.parent} does not verify with {key}: "
            f"{failed.name}: {failed.detail}."
        )
    _same_tree(spec, record)
    keyid = signing.fingerprint(signing.load_public_key(key))
    ancestors = []
    if record.parent is not None:
        ancestors = [Ancestor(name=record.parent.name, digest=record.parent.digest)]
        ancestors += record.parent.ancestors
    pin = ParentRecord(
        name=record.recipe.name,
        digest=pinned,
        provenance_digest=f"sha256:{sha256_file(spec.parent / PROVENANCE)}",
        source=base.image,
        signer=keyid,
        ancestors=ancestors,
    )
    return Parent(spec.parent, record, pin)


def _same_tree(spec: Spec, record: BuildRecord) -> None:
    """The child's boot layout and suite are its parent's: its tree holds their boot loaders
    and packages."""
    base = spec.recipe.base
    if record.image.boot != base.boot:
        raise InputError(
            f"{spec.where('base.boot')}: base.boot: the parent image boots {record.image.boot}, "
            f"and a child boots as its parent does; write boot: {record.image.boot}."
        )
    suite = (record.pins.base or {}).get("suite")
    if suite is not None and suite != base.suite:
        raise InputError(
            f"{spec.where('base.suite')}: base.suite: the parent image is Debian {suite}; "
            f"write suite: {suite}."
        )

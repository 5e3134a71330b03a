"""The checks an extracted bundle must pass before it is installed. The key is the one the user
brings (--pub), never the bundle's baker.pub, which is only carried so the two sides can
compare fingerprints; the two must be the same. SHA256SUMS files are not signed, so every
claim they make is tied back to what is: the image digest to the signed provenance, converted
disks to the image by `qemu-img compare`, each source file and package to its digest in
the signed provenance, and a carried parent to what that provenance says of it."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from baker.artifact import BUILD, IMAGE, PROVENANCE, read_record
from baker.bundle.carried_parent import verify_carried
from baker.bundle.layout import INDEX, PUBLIC_KEY
from baker.errors import BuildError, InputError
from baker.evidence import signing
from baker.formats import convert
from baker.hashing import sha256_file
from baker.progress import Meter, Reporter
from baker.recipe import lock


def verify_extracted(
    work: Path,
    index: dict[str, Any],
    key: ec.EllipticCurvePublicKey | None,
    pub: Path | None,
    reporter: Reporter,
    statements: Sequence[tuple[object, str]] = (),
) -> list[str]:
    """The extracted bundle in `work` checked whole: its baker.pub against the key the user
    trusts, the artifact's evidence (as `baker verify` checks it), the image against the index,
    the converted disks against the image, and the carried sources; the lines to report.
    `statements`: revocations (--revocations) the image and its ancestors must not be named in."""
    from baker.evidence import (
        verify as check,  # its SBOM schemas take seconds to load: only when needed
    )

    tree = work / "tree"
    lines = []
    bundled = work / "meta" / PUBLIC_KEY
    if key is not None and bundled.exists():
        try:
            theirs = signing.fingerprint(signing.load_public_key(bundled))
        except InputError:
            raise BuildError(f"the bundle's {PUBLIC_KEY} is not a valid public key.") from None
        if theirs != signing.fingerprint(key):
            raise BuildError(
                f"the bundle's {PUBLIC_KEY} (key {theirs[:16]}…) is not the key you "
                f"gave (key {signing.fingerprint(key)[:16]}…)."
            )
    with Meter(reporter, "verify the artifact (checksums, signature, provenance, SBOMs)", 0):
        findings = check.verify(tree, pub, statements=statements)
    for f in findings:
        if f.ok is False or (f.ok is None and key is not None):
            raise BuildError(f"{index['artifact']}: {f.name}: {f.detail}.")
        lines.append(f.line())
    digest = f"sha256:{sha256_file(tree / IMAGE)}"
    if digest != index["image"]["digest"]:
        raise BuildError(f"{INDEX} names {index['image']['digest']}, but {IMAGE} is {digest}.")
    with Meter(reporter, "compare the converted disks with the image", 0):
        lines += [f"ok   {line}" for line in convert.check_converted(tree)]
    if index["sources"]:
        try:
            lines += _verify_sources(work, index["sources"])
        except (KeyError, TypeError, AttributeError, ValueError) as e:
            raise BuildError(
                f"the sources cannot be checked: {INDEX}, {BUILD} or the "
                f"provenance lacks a field ({e!r})."
            ) from None
    return lines


def _verify_sources(work: Path, where: dict[str, Any]) -> list[str]:
    """Each carried source against the build record and the (signed) provenance: recipe and
    lock digests, every pinned file, and exactly the packages the lock names."""
    tree = work / "tree"
    try:
        record = read_record(tree)
    except InputError as e:
        raise BuildError(str(e)) from None  # in an import, a bad record is a failed check
    statement = json.loads((tree / PROVENANCE).read_bytes())
    signed = {
        d.get("name"): f"sha256:{d.get('digest', {}).get('sha256')}"
        for d in statement["predicate"]["buildDefinition"]["resolvedDependencies"]
    }
    pins = record.pins
    if pins.lock is None and (where["lock"] is not None or "parent" not in where):
        raise KeyError("pins.lock")

    def agree(what: str, found: str, *expected: str) -> None:
        if any(found != e for e in expected):
            raise BuildError(f"the carried {what} does not match the build's record of it.")

    recipe = tree / where["recipe"]
    agree(
        f"recipe {where['recipe']}",
        f"sha256:{sha256_file(recipe)}",
        record.recipe.digest,
        signed.get("recipe", ""),
    )
    expected = {where["recipe"]}
    locked_shas: set[str] = set()
    if pins.lock is not None:
        if where["lock"] != str(PurePosixPath(where["recipe"]).with_suffix(".lock")):
            raise BuildError("the carried lock does not sit beside the carried recipe.")
        try:
            locked = lock.load(tree / where["lock"])
        except InputError:
            raise BuildError(f"the carried lock {where['lock']} is not a valid lock.") from None
        agree(f"lock {where['lock']}", locked.digest, pins.lock.digest, signed.get("lock", ""))
        expected.add(where["lock"])
        locked_shas = {p.sha256 for p in locked.packages}
    if set(where["files"]) != set(pins.files):
        raise BuildError("the carried sources are not the files the build pinned.")
    recipe_dir = PurePosixPath(where["recipe"]).parent
    for rel, arc in where["files"].items():
        if arc != f"{os.path.normpath(recipe_dir / rel)}":
            raise BuildError(f"the carried {rel} is not where the recipe looks for it.")
        agree(arc, f"sha256:{sha256_file(tree / arc)}", pins.files[rel], signed.get(rel, ""))
        expected.add(arc)
    present = {str(p.relative_to(tree)) for p in (tree / "sources").rglob("*") if p.is_file()}
    if extra := sorted(present - expected):
        raise BuildError(f"the bundle carries {extra[0]}, which the build did not pin.")
    # The lock's digest is in the signed provenance, and it names every package's sha256.
    debs = {p.name.removesuffix(".deb") for p in (work / "debs").glob("*.deb")}
    if debs != locked_shas or set(where["debs"]) != set(pins.debs):
        raise BuildError("the carried packages are not exactly the locked ones.")
    for sha in debs:
        if sha256_file(work / "debs" / f"{sha}.deb") != sha:
            raise BuildError(f"debs/{sha}.deb does not hold what its name says.")
    lines = [
        f"ok   sources: recipe, lock and {len(where['files'])} pinned files match the provenance",
        f"ok   packages: the {len(debs)} locked .deb files, each matching its pin",
    ]
    if "parent" in where:
        if record.parent is None or where["parent"]["name"] != record.parent.name:
            raise BuildError("the bundle carries a parent the build did not record.")
        lines.append(verify_carried(tree, where["parent"], statement))
    elif record.parent is not None:
        raise BuildError(f"the bundle does not carry the parent {record.parent.name}.")
    return lines

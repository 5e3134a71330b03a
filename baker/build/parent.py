"""A child's parent image (the recipe's base.image): found, and verified with the trusted key
before anything starts, as `baker verify --pub KEY` would (digests, SBOMs, provenance,
signature); its lineage recorded for the child's evidence.

Everything wrong with a parent is the recipe's to fix, so each refusal is an InputError (exit
2) naming the recipe's file, line and field."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from baker.artifact import (
    IMAGE,
    PROVENANCE,
    Ancestor,
    BuildRecord,
    Carried,
    ParentRecord,
    read_record,
)
from baker.cache import Cache
from baker.errors import BakerError, BuildError, InputError
from baker.evidence import signing
from baker.evidence.verify import verify
from baker.hashing import sha256_file
from baker.image.apt import UnknownPackage
from baker.recipe.load import load as load_recipe
from baker.recipe.lock import Lock, LockedPackage, ParentPin
from baker.recipe.spec import Spec

TRUST_ENV = "BAKER_TRUST_KEY"
PARENTS = "parents"  # under the cache's root: registry parents, by manifest digest


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


def resolve(
    spec: Spec,
    cache: Cache | None = None,
    on_progress: Callable[[str], None] = lambda s: None,
    parents: Path = Path("out"),
    tag_pin: ParentPin | None = None,
    carried: Carried | None = None,
) -> Parent | None:
    """The recipe's parent image, verified; None for a recipe without one. A registry
    parent is pulled into `cache` first (once: later builds verify the copy there), by its
    digest: the recipe's, or for a tag the lock's `tag_pin`; a `recipe:FILE` parent is that
    recipe's artifact in `parents`; a `carried` one is where it was carried to."""
    base = spec.recipe.base
    if base.image is None or spec.cloud_image is not None:
        return None
    here = spec.where("base.image")
    if spec.recipe.backend.type != "libvirt":
        raise InputError(
            f"{here}: base.image: a parent image is a local disk; the {spec.recipe.backend.type} "
            "backend starts from its own base image."
        )
    key = carried.key if carried else _trusted_key(spec)
    reference = None  # a registry parent's, host/repository@sha256:<manifest digest>
    if carried is not None:
        artifact = carried.artifact
    elif spec.parent_ref is not None:
        pinned = _by_digest(spec, spec.parent_ref, tag_pin)
        artifact, reference = _pulled(spec, pinned, key, cache or Cache(), on_progress)
    else:
        # A recipe's parent is whichever build of it is there: the record pins that one.
        local = spec.parent_recipe is None
        artifact = (spec.parent or Path(base.image)) if local else parents / recipe_name(spec)
        if not (artifact / IMAGE).is_file():
            why = f" (it holds no {IMAGE})" if local else (
                f": build {base.image} first (baker nightly builds parents first)")  # fmt: skip
            raise InputError(f"{here}: base.image: no baker artifact at {artifact}{why}.")
    named = reference or str(artifact)
    try:
        record = read_record(artifact)
    except InputError as e:
        raise InputError(f"{here}: base.image: {e}") from None
    digest = record.image.digest
    if base.sha256 is not None and digest != f"sha256:{base.sha256}":
        raise InputError(
            f"{spec.where('base.sha256')}: base.sha256: the parent {named} is "
            f"{digest}, not the pinned sha256:{base.sha256}."
        )
    try:
        findings = verify(artifact, key)
    except BakerError as e:
        raise InputError(f"{spec.where('base.trust')}: base.trust: {e}") from None
    failed = next((f for f in findings if f.ok is not True), None)
    if failed is not None:
        raise InputError(
            f"{here}: base.image: the parent {named} does not verify with {key}: "
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
        digest=digest,
        provenance_digest=f"sha256:{sha256_file(artifact / PROVENANCE)}",
        source=reference or (str(artifact) if spec.parent_recipe or carried else base.image),
        signer=keyid,
        ancestors=ancestors,
    )
    return Parent(artifact, record, pin)


def recipe_name(spec: Spec) -> str:
    """The image name of the recipe a `recipe:FILE` parent names (its artifact's name)."""
    assert spec.parent_recipe is not None
    try:
        return load_recipe(spec.parent_recipe).name
    except InputError as e:
        raise InputError(f"{spec.where('base.image')}: base.image: its recipe: {e}") from None


def _trusted_key(spec: Spec) -> Path:
    key = trust_key(spec)
    if key is None:
        raise InputError(
            f"{spec.where('base')}: base.trust: a parent image is trusted by the key that signed "
            f"it; name its public key (trust: FILE, or ${TRUST_ENV})."
        )
    if not key.is_file():
        raise InputError(f"{spec.where('base.trust')}: base.trust: no such key file {key}.")
    return key


def lock_child(
    spec: Spec,
    cache: Cache,
    work: Path,
    on_progress: Callable[[str], None] = lambda s: None,
    on_line: Callable[[str], None] = lambda s: None,
    parents: Path = Path("out"),
) -> Lock:
    """A child's lock: for a parent named by a registry tag, the digest the tag names now;
    the child's own base.packages, resolved against the parent image's dpkg database and
    fetched into the package cache; the parent's SOURCE_DATE_EPOCH. The parent is found and
    verified as for a build."""
    from baker.image import child_packages

    base, here = spec.recipe.base, spec.where("base.image")
    tagged = spec.parent_ref is not None and "@sha256:" not in spec.parent_ref
    if not tagged and not base.packages:
        raise InputError(
            f"{here}: base.image: nothing to lock: a child's lock pins a parent named by a "
            f"registry tag and the child's own base.packages, and {base.image} is pinned as it "
            "is written, with no packages of its own."
        )
    pin = _tag_pin(spec) if tagged else None
    found = resolve(spec, cache, on_progress, parents, tag_pin=pin)
    assert found is not None
    packages: tuple[LockedPackage, ...] = ()
    if base.packages:
        status = _dpkg_status(found.image, work)
        try:
            packages = tuple(child_packages.resolve(base, status, cache, work, on_line))
        except UnknownPackage as e:
            raise InputError(f"{spec.where(e.field)}: {e}") from None
    sde = found.record.source_date_epoch or 0
    resolved = dt.datetime.fromtimestamp(sde, dt.UTC).isoformat()
    return Lock(base.suite, base.arch, tuple(sorted(base.packages)), resolved, packages, pin)


def _dpkg_status(image: Path, work: Path) -> str:
    """The dpkg database of a parent image, read from its root filesystem (mounted
    read-only): what apt resolves a child's own packages against."""
    from baker.inspect import disk

    with disk.scratch(work) as scratch, contextlib.ExitStack() as stack:
        found = disk.open_image(image, "parent", scratch, stack).root / "var/lib/dpkg/status"
        if not found.is_file():
            raise BuildError(f"{image} has no dpkg database (/var/lib/dpkg/status).")
        return found.read_text(errors="replace")


def _tag_pin(spec: Spec) -> ParentPin:
    """The digest the registry tag of base.image names now."""
    from baker.registry.client import RegistryError, connect
    from baker.registry.ref import parse

    assert spec.parent_ref is not None
    here = spec.where("base.image")
    try:
        ref = parse(spec.parent_ref, "base.image")
        got = connect(ref).get_manifest(ref.repository, ref.reference)
    except (InputError, RegistryError) as e:
        raise InputError(f"{here}: {e}") from None
    if got is None:
        raise InputError(f"{here}: base.image: the registry has no {ref}.")
    return ParentPin(spec.parent_ref, got[2])


def _by_digest(spec: Spec, reference: str, pin: ParentPin | None) -> str:
    """The registry parent by digest: as the recipe writes it, or a tag as the lock pins it."""
    if "@sha256:" in reference:
        return reference
    if pin is None or pin.reference != reference:
        raise InputError(
            f"{spec.where('base.image')}: base.image: {reference} names a tag, which can move; "
            f"`baker lock {spec.source}` pins it to the digest it names now (or write "
            "…@sha256:<manifest digest>)."
        )
    return f"{reference}@{pin.digest}"


def _pulled(
    spec: Spec, reference: str, key: Path, cache: Cache, on_progress: Callable[[str], None]
) -> tuple[Path, str]:
    """The registry parent's artifact in the cache (parents/<manifest digest>), pulled as
    `baker pull` does (every blob hashed as it streams, everything verify checks) when it
    is not there yet, and its reference by digest alone. Whatever the registry says is
    said of the recipe's line."""
    from baker.registry import pull as puller
    from baker.registry.client import RegistryError, connect
    from baker.registry.ref import parse

    try:
        ref = parse(reference, "base.image")  # with a digest: _by_digest saw to it
    except InputError as e:
        raise InputError(f"{spec.where('base.image')}: {e}") from None
    pinned = ref.at(str(ref.digest))
    root = cache.root / PARENTS
    target = root / str(ref.digest).removeprefix("sha256:")
    if (target / IMAGE).is_file():
        return target, str(pinned)  # pulled by an earlier build; verified again below
    root.mkdir(parents=True, exist_ok=True)
    staging = root / f".{target.name}.{os.getpid()}"
    on_progress(f"pulling the parent image {pinned}")
    try:
        puller.pull(connect(pinned), pinned, staging, key, on_progress)
    except RegistryError as e:
        raise InputError(f"{spec.where('base.image')}: base.image: {e}") from None
    try:
        staging.rename(target)
    except OSError:  # another build pulled it meanwhile: theirs is as good
        shutil.rmtree(staging, ignore_errors=True)
    return target, str(pinned)


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

"""`baker import`: a bundle checked completely, in a staging directory beside the target, before
the target is touched; then the artifact (and sources) moved into place with one rename and
the packages into the cache. Any failure leaves the target as it was (absent or empty).

The member list is read from the tar headers alone and refused before any byte is written if
it holds anything a bundle never does: links, devices, unsafe names, duplicates, members
beyond the bounds below, members outside the layout. The checks on the extracted files are
in baker.bundle.checks.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tarfile
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from baker.artifact import CARRIED, CARRIED_KEY, DSSE, IMAGE, SIGNATURE
from baker.bundle.checks import verify_extracted
from baker.bundle.layout import BUNDLE_SUMS, FORMAT, INDEX, META, os_error
from baker.bundle.streams import CHUNK, write_sparse
from baker.cache import Cache
from baker.errors import BuildError, InputError
from baker.evidence import revocation, signing
from baker.formats import convert
from baker.progress import Meter, Reporter, human

# Bounds a bundle must keep: a member claiming more is refused before anything is written.
MAX_MEMBERS = 100_000
MAX_DISK = 1 << 40  # a disk image in any format
MAX_DEB = 4 << 30  # Debian's largest packages are well under this
MAX_OTHER = 64 << 20  # evidence, sources, keys: text files
MAX_NAME = 1024
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]*")


@dataclass(frozen=True)
class Imported:
    directory: Path
    name: str
    digest: str
    signer: str | None
    files: int
    size: int
    debs: int
    seconds: float
    recipe: Path | None
    checks: list[str]


def import_bundle(
    bundle: Path,
    into: Path,
    reporter: Reporter,
    *,
    pub: Path | None,
    cache: Cache | None = None,
    statements: Sequence[tuple[object, str]] = (),
) -> Imported:
    """Check everything in `bundle`, in a staging directory beside `into`, before `into` is
    touched; then move the artifact (and sources) into `into` and the packages into the cache.
    Any failure leaves `into` as it was (absent or empty). An image `statements` revoke (or
    whose ancestor they revoke) is refused, the image itself before anything is extracted."""
    key = signing.load_public_key(pub) if pub else None
    into = Path(os.path.abspath(into))  # "." too has a name and a parent to stage beside
    _check_target(into)
    if not bundle.is_file():
        raise InputError(f"{bundle}: no such bundle file.")
    started = time.monotonic()
    try:
        with tarfile.open(bundle, "r:") as tar:
            members = _members(tar, bundle)
            listed, index = _read_meta(tar, members, bundle)
            kinds = _classify(members, index, bundle)
            _check_signed(bundle, kinds, index, key)
            _check_revoked(bundle, index, statements, key)
            _check_space(into, members)
            work = Path(tempfile.mkdtemp(prefix=f".{into.name}.import-", dir=into.parent))
            try:
                _extract(tar, members, kinds, listed, work, reporter)
                checks = verify_extracted(work, index, key, pub, reporter, statements)
                debs = _install(work, into, cache or Cache())
            finally:
                shutil.rmtree(work, ignore_errors=True)
    except tarfile.TarError as e:
        raise BuildError(f"{bundle}: not a readable tar ({e}).") from None
    except OSError as e:
        raise os_error(f"import of {bundle}", e) from None
    sources = index.get("sources")
    return Imported(
        into,
        index["artifact"],
        index["image"]["digest"],
        signing.fingerprint(key) if key else None,
        len(members),
        sum(m.size for m in members.values()),
        debs,
        time.monotonic() - started,
        into / sources["recipe"] if sources else None,
        checks,
    )


def _check_revoked(
    bundle: Path,
    index: dict[str, Any],
    statements: Sequence[tuple[object, str]],
    key: ec.EllipticCurvePublicKey | None,
) -> None:
    if not statements:
        return
    if key is None:
        raise InputError("--revocations: give --pub KEY, the key revocations are signed with.")
    found, _ = revocation.collect(statements, [key])
    try:
        revocation.check(index["artifact"], index["image"]["digest"], [], found)
    except revocation.Revoked as e:
        raise revocation.Revoked(f"{bundle}: refused, {e}.") from None


def _check_target(into: Path) -> None:
    if into.is_symlink() or (into.exists() and not into.is_dir()):
        raise InputError(f"--into {into}: exists and is not a directory.")
    if into.is_dir() and any(into.iterdir()):
        raise InputError(f"--into {into}: is not empty; import into a new or empty directory.")
    if not into.parent.is_dir():
        raise InputError(f"--into {into}: {into.parent} does not exist.")


def _members(tar: tarfile.TarFile, bundle: Path) -> dict[str, tarfile.TarInfo]:
    """The member list, read from the headers alone, with everything a bundle never holds
    refused: links, devices, odd names, duplicates, members beyond any sane size."""
    members: dict[str, tarfile.TarInfo] = {}
    for n, m in enumerate(tar, 1):
        if n > MAX_MEMBERS:
            raise BuildError(f"{bundle}: more than {MAX_MEMBERS} members.")
        _check_name(m.name, bundle)
        if m.issym() or m.islnk():
            kind = "a symbolic link" if m.issym() else "a hard link"
            raise BuildError(
                f"{bundle}: {m.name} is {kind} (to {m.linkname}); "
                "a bundle holds regular files only."
            )
        if m.isdir():
            continue  # tar tools add them when repacking; the files say where they go
        if m.type not in (tarfile.REGTYPE, tarfile.AREGTYPE):
            raise BuildError(f"{bundle}: {m.name} is not a regular file (tar type {m.type!r}).")
        if m.name in members:
            raise BuildError(f"{bundle}: {m.name} appears twice.")
        if m.size > (bound := _bound(m.name)):
            raise BuildError(
                f"{bundle}: {m.name} claims {human(m.size)}, over the {human(bound)} a bundle "
                "allows for it."
            )
        members[m.name] = m
    return members


def _bound(name: str) -> int:
    """The most a member may hold, by what its name says it is: read before anything else,
    so a forged size is refused before a byte is written."""
    base = name.rsplit("/", 1)[-1]
    if base.startswith("image.") and base.removeprefix("image.") in convert.FORMATS:
        return MAX_DISK
    return MAX_DEB if name.startswith("debs/") else MAX_OTHER


def _check_name(name: str, bundle: Path) -> None:
    path = PurePosixPath(name)
    bad = (
        not name
        or len(name) > MAX_NAME
        or path.is_absolute()
        or "\\" in name
        or any(ord(c) < 32 or c == "\x7f" for c in name)
        or any(part in ("", ".", "..") for part in name.rstrip("/").split("/"))
    )
    if bad:
        raise BuildError(f"{bundle}: member {name!r} has an unsafe path (absolute, .. or odd).")


def _read_meta(
    tar: tarfile.TarFile, members: dict[str, tarfile.TarInfo], bundle: Path
) -> tuple[dict[str, str], dict[str, Any]]:
    for name in (BUNDLE_SUMS, INDEX):
        if name not in members:
            raise BuildError(f"{bundle}: no {name}; is this a baker bundle?")
        if members[name].size > MAX_OTHER:
            raise BuildError(f"{bundle}: {name} is implausibly large.")
    listed: dict[str, str] = {}
    text = _small(tar, members[BUNDLE_SUMS]).decode(errors="replace")
    for n, line in enumerate(text.splitlines(), 1):
        m = re.fullmatch(r"([0-9a-f]{64}) [ *](.+)", line)
        if not m or m.group(2) in listed:
            raise BuildError(f"{bundle}: {BUNDLE_SUMS} line {n} is not a sha256sum line.")
        listed[m.group(2)] = m.group(1)
    present = set(members) - {BUNDLE_SUMS}
    if missing := sorted(set(listed) - present):
        raise BuildError(
            f"{bundle}: {missing[0]} is listed in {BUNDLE_SUMS} but not in the "
            "bundle (removed or cut off)."
        )
    if unlisted := sorted(present - set(listed)):
        raise BuildError(f"{bundle}: {unlisted[0]} is in the bundle but not in {BUNDLE_SUMS}.")
    data = _small(tar, members[INDEX])
    if hashlib.sha256(data).hexdigest() != listed[INDEX]:
        raise BuildError(f"{bundle}: {INDEX} does not match {BUNDLE_SUMS}.")
    try:
        index = json.loads(data)
        if index["format"] != FORMAT or not _NAME.fullmatch(index["artifact"]):
            raise ValueError("unknown format or artifact name")
        index["image"]["digest"], index["signer"], index["sources"]
    except (ValueError, KeyError, TypeError) as e:
        raise BuildError(f"{bundle}: {INDEX} is not a baker bundle index ({e}).") from None
    return listed, dict(index)


def _small(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    f = tar.extractfile(member)
    assert f is not None
    return f.read(MAX_OTHER)


def _classify(
    members: dict[str, tarfile.TarInfo], index: dict[str, Any], bundle: Path
) -> dict[str, str]:
    """Each member's kind (meta, artifact, source, deb, parent), from where it sits; anything
    else is refused."""
    art = index["artifact"]
    # A child's parent, when the sources carry one (parent/NAME/…, parent/trust.pub).
    carried = ((index["sources"] or {}).get("parent") or {}).get("name")
    kinds: dict[str, str] = {}
    for name in members:
        parts = name.split("/")
        if name in META:
            kinds[name] = "meta"
        elif len(parts) == 2 and parts[0] == art:
            kinds[name] = "artifact"
        elif (
            len(parts) == 2 and parts[0] == "debs" and re.fullmatch(r"[0-9a-f]{64}\.deb", parts[1])
        ):
            kinds[name] = "deb"
        elif len(parts) >= 2 and parts[0] == "sources":
            kinds[name] = "source"
        elif carried and parts[0] == CARRIED and parts[1:] in ([CARRIED_KEY], [carried, parts[-1]]):
            kinds[name] = "parent"
        else:
            raise BuildError(f"{bundle}: unexpected member {name}.")
    if f"{art}/{IMAGE}" not in kinds:
        raise BuildError(f"{bundle}: no {art}/{IMAGE} in the bundle.")
    if not index["sources"] and any(k in ("source", "deb", "parent") for k in kinds.values()):
        raise BuildError(f"{bundle}: carries sources its index does not describe.")
    return kinds


def _check_signed(
    bundle: Path,
    kinds: dict[str, str],
    index: dict[str, Any],
    key: ec.EllipticCurvePublicKey | None,
) -> None:
    art = index["artifact"]
    signed = f"{art}/{SIGNATURE}" in kinds or f"{art}/{DSSE}" in kinds
    if signed and key is None:
        raise InputError(
            f"{bundle} is signed (by key {str(index['signer'])[:16]}…); give the public key you "
            "trust with --pub."
        )
    if not signed and key is not None:
        raise BuildError(
            f"{bundle} is not signed, but --pub was given: refusing an unsigned "
            "bundle where a signed one is expected."
        )


def _check_space(into: Path, members: dict[str, tarfile.TarInfo]) -> None:
    need = sum(m.size for m in members.values())
    free = shutil.disk_usage(into.parent).free
    if need > free:
        raise BuildError(
            f"the bundle needs {human(need)} beside {into}, but only {human(free)} is free."
        )


def _staged(work: Path, name: str, kind: str) -> Path:
    if kind == "meta":
        return work / "meta" / name
    if kind == "deb":
        return work / name  # work/debs/<sha256>.deb
    # The artifact's files and sources/ become the target directory's contents.
    parts = name.split("/")
    return work / "tree" / (parts[1] if kind == "artifact" else name)


def _extract(
    tar: tarfile.TarFile,
    members: dict[str, tarfile.TarInfo],
    kinds: dict[str, str],
    listed: dict[str, str],
    work: Path,
    reporter: Reporter,
) -> None:
    """Stream each member into the staging directory, hashing it; any mismatch stops here."""
    total = sum(m.size for m in members.values())
    with Meter(reporter, "extract and check each member", total) as meter:
        for name, m in members.items():
            target = _staged(work, name, kinds[name])
            target.parent.mkdir(parents=True, exist_ok=True)
            digest = _copy_out(tar, m, target, meter)
            if name != BUNDLE_SUMS and digest != listed[name]:
                raise BuildError(
                    f"{name} does not match {BUNDLE_SUMS}: the bundle is corrupt or was altered."
                )


def _copy_out(tar: tarfile.TarFile, m: tarfile.TarInfo, target: Path, meter: Meter) -> str:
    src = tar.extractfile(m)
    assert src is not None
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    h = hashlib.sha256()
    with os.fdopen(os.open(target, flags, 0o644), "wb") as out:
        while chunk := src.read(CHUNK):
            h.update(chunk)
            write_sparse(out, chunk)
            meter.advance(len(chunk))
        out.truncate(m.size)
    if target.stat().st_size != m.size:
        raise BuildError(f"{m.name} is cut short in the bundle.")
    return h.hexdigest()


def _install(work: Path, into: Path, cache: Cache) -> int:
    """Packages into the cache (content-addressed, so a failure after this harms nothing),
    then the checked tree into place with one rename."""
    debs = sorted((work / "debs").glob("*.deb")) if (work / "debs").is_dir() else []
    for deb in debs:
        target = cache.deb_path(deb.name.removesuffix(".deb"))
        if not target.exists():
            with cache.staging(target) as tmp:
                shutil.move(deb, tmp)
    tree = work / "tree"
    for path in [tree, *tree.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    try:
        # rename() replaces an empty directory: `into` goes from absent or empty to complete.
        tree.rename(into)
    except OSError as e:
        raise BuildError(f"cannot move the checked artifact into {into}: {e.strerror}.") from None
    return len(debs)

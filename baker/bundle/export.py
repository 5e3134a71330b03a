"""`baker export`: one self-verifying tar per image, to carry across an air gap (member layout in
baker.bundle.layout; what is read back, and how it is trusted, in baker.bundle.importer).

The tar format is POSIX pax: Python writes plain ustar headers for ordinary members and adds
an extended record only where ustar falls short (a name over 100 bytes, a member over 8 GiB),
which GNU tar, bsdtar and busybox all read; GNU's own extensions are not needed anywhere.

A signed artifact is exported with its signer's public key, checked to be the signer's, and
its signatures are checked before anything is written: a bundle that would fail import is not
written.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils

from baker.artifact import (
    DSSE,
    IMAGE,
    PROVENANCE,
    SIGNATURE,
    SUMS,
    Carried,
    dump_json,
    read_sums,
)
from baker.bundle.layout import (
    BUNDLE_SUMS,
    FORMAT,
    INDEX,
    PUBLIC_KEY,
    VERIFY,
    Member,
    artifact_members,
    from_bytes,
    os_error,
    verify_text,
)
from baker.bundle.sources import collect_sources
from baker.bundle.streams import CHUNK, BytesReader, HashingWriter
from baker.cache import Cache
from baker.errors import BuildError, InputError
from baker.evidence import signing
from baker.formats import convert
from baker.formats.tario import HashingReader, tar_info
from baker.progress import Meter, Reporter

_ECDSA_PREHASHED = ec.ECDSA(utils.Prehashed(hashes.SHA256()))


@dataclass(frozen=True)
class Exported:
    path: Path
    sha256: str
    size: int
    members: int
    seconds: float
    signer: str | None
    sources: bool


def export(
    artifact: Path,
    to: Path,
    reporter: Reporter,
    *,
    formats: tuple[str, ...] = (),
    with_sources: bool = False,
    pub: Path | None = None,
    recipe: Path | None = None,
    cache: Cache | None = None,
    parent: Carried | None = None,
) -> Exported:
    """Write `artifact` (and with `with_sources`, what an offline rebuild needs) into the tar
    `to`, which appears whole or not at all; the same inputs give the same bytes."""
    try:
        return _export(artifact, to, reporter, formats, with_sources, pub, recipe, cache, parent)
    except OSError as e:
        raise os_error(f"export of {artifact}", e) from None


def _export(
    artifact: Path,
    to: Path,
    reporter: Reporter,
    formats: tuple[str, ...],
    with_sources: bool,
    pub: Path | None,
    recipe: Path | None,
    cache: Cache | None,
    parent: Carried | None,
) -> Exported:
    record = convert.image_record(artifact)
    to = Path(os.path.abspath(to))
    _check_destination(artifact, to)
    key = _export_key(artifact, pub)
    sources: list[Member] = []
    where: dict[str, Any] | None = None
    if with_sources:
        # Before any conversion: a refusal here should cost nothing.
        sources, where = collect_sources(artifact, record.build, recipe, cache or Cache(), parent)
    if formats:
        convert.convert(artifact, formats, reporter)
    sums = read_sums(artifact)
    if sums.get(IMAGE) != record.digest.removeprefix("sha256:"):
        raise BuildError(f"{artifact}/{SUMS} does not list {IMAGE} with the digest in build.json.")
    if key is not None:
        _check_signatures(artifact, key, sums[IMAGE])
    members = artifact_members(artifact, record.name, sums) + sources
    members += _meta_members(record, key, where, members)
    members.sort(key=lambda m: m.name)
    started = time.monotonic()
    sha256, size = _write_bundle(to, members, record.source_date_epoch, reporter)
    return Exported(
        to,
        sha256,
        size,
        len(members),
        time.monotonic() - started,
        signing.fingerprint(key) if key else None,
        with_sources,
    )


def _check_destination(artifact: Path, to: Path) -> None:
    if to.is_dir():
        raise InputError(f"--to {to}: is a directory; give the bundle's file name.")
    if not to.parent.is_dir():
        raise InputError(f"--to {to}: {to.parent} does not exist.")
    if to.parent.resolve() == artifact.resolve():
        raise InputError(f"--to {to}: the bundle cannot go inside the artifact it carries.")


def _export_key(artifact: Path, pub: Path | None) -> ec.EllipticCurvePublicKey | None:
    """The signer's key to carry: required for a signed artifact, and it must be the signer's."""
    signed = (artifact / SIGNATURE).exists() or (artifact / DSSE).exists()
    if not signed:
        if pub is not None:
            raise InputError(f"{artifact} is not signed; --pub has no signature to match.")
        return None
    if pub is None:
        raise InputError(
            f"{artifact} is signed; give its signer's public key with --pub so the bundle "
            "carries it."
        )
    from baker.evidence import (
        verify as check,  # its SBOM schemas take seconds to load: only when needed
    )

    key = signing.load_public_key(pub)
    keyid, fingerprint = check.signer(artifact), signing.fingerprint(key)
    if keyid != fingerprint:
        raise InputError(
            f"--pub {pub} (key {fingerprint[:16]}…) is not the key that signed {artifact} "
            f"({(keyid or 'no keyid')[:16]}…)."
        )
    return key


def _check_signatures(artifact: Path, key: ec.EllipticCurvePublicKey, image_sha256: str) -> None:
    """The image signature (over the digest SHA256SUMS lists, which the export then checks the
    image against as it streams it) and the DSSE envelope; a bundle that would fail import is
    not written."""
    try:
        sig = base64.b64decode((artifact / SIGNATURE).read_text().strip(), validate=True)
        key.verify(sig, bytes.fromhex(image_sha256), _ECDSA_PREHASHED)
    except FileNotFoundError:
        raise BuildError(f"{artifact} has {DSSE} but no {SIGNATURE}.") from None
    except (InvalidSignature, ValueError, binascii.Error):
        raise BuildError(f"{artifact}/{SIGNATURE} is not a valid signature by that key.") from None
    try:
        envelope = json.loads((artifact / DSSE).read_bytes())
        statement = (artifact / PROVENANCE).read_bytes()
    except (OSError, ValueError) as e:
        raise BuildError(f"{artifact}: the signed provenance cannot be read ({e}).") from None
    if signing.dsse_verify(key, envelope) != statement:
        raise BuildError(f"{artifact}/{DSSE} does not sign {PROVENANCE}.")


def _meta_members(
    record: convert.Record,
    key: ec.EllipticCurvePublicKey | None,
    where: dict[str, Any] | None,
    members: list[Member],
) -> list[Member]:
    name = record.name
    signer = signing.fingerprint(key) if key else None
    index = {
        "format": FORMAT,
        "image": {"name": name, "digest": record.digest},
        "artifact": name,
        "signer": signer,
        "sources": where,
    }
    disks = sorted(
        m.name.removeprefix(f"{name}/")
        for m in members
        if m.name.startswith(f"{name}/image.") and not m.name.endswith(".sig")
    )
    meta = [
        from_bytes(INDEX, dump_json(index)),
        from_bytes(VERIFY, verify_text(name, record.digest, signer, disks, where)),
    ]
    if key is not None:
        meta.append(from_bytes(PUBLIC_KEY, _pem(key)))
    listed = sorted([*members, *meta], key=lambda m: m.name)
    sums = "".join(f"{m.sha256}  {m.name}\n" for m in listed)
    return [*meta, from_bytes(BUNDLE_SUMS, sums.encode())]


def _pem(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _write_bundle(
    to: Path, members: list[Member], mtime: int, reporter: Reporter
) -> tuple[str, int]:
    tmp = to.with_name(f".{to.name}.{os.getpid()}.partial")
    total = sum(m.size for m in members)
    try:
        with (
            tmp.open("wb") as f,
            Meter(reporter, f"export {to.name}", total) as meter,
            contextlib.closing(HashingWriter(f)) as out,
        ):
            with tarfile.open(
                fileobj=out,
                mode="w",
                format=tarfile.PAX_FORMAT,  # type: ignore[call-overload]
                copybufsize=CHUNK,
            ) as tar:
                for m in members:
                    _add(tar, m, mtime, meter)
            out.finish()
            f.flush()
            os.fsync(f.fileno())
        tmp.chmod(0o644)
        tmp.rename(to)
    except OSError as e:
        raise BuildError(f"cannot write {to}: {e.strerror or e}.") from None
    finally:
        tmp.unlink(missing_ok=True)
    return out.hash.close(), out.size


def _add(tar: tarfile.TarFile, m: Member, mtime: int, meter: Meter) -> None:
    info = tar_info(m.name, m.size, mtime)
    if m.data is not None:
        tar.addfile(info, BytesReader(m.data))
        meter.advance(m.size)
        return
    assert m.path is not None
    with m.path.open("rb") as f:
        reader = HashingReader(f, meter.advance)
        tar.addfile(info, reader)
    if reader.hash.hexdigest() != m.sha256:
        raise BuildError(f"{m.path} does not match its recorded sha256; run baker verify.")

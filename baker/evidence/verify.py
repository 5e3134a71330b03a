"""`baker verify`: an artifact directory checked offline, every claim against every other;
for an EC2 image, with `--live`, also against the snapshot the cloud holds.

Each check is independent and reports one line; a tampered or truncated file is a failed
check, never a crash, since what is verified here is by definition untrusted input.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from baker import artifact
from baker.artifact import (
    AMI,
    BOOT,
    BUILD,
    DSSE,
    IMAGE,
    PROVENANCE,
    SBOM_CDX,
    SBOM_SPDX,
    SUMS,
    VULNS,
)
from baker.errors import BakerError, InputError
from baker.evidence import provenance, revocation, sbom_cdx, sbom_spdx, signing
from baker.hashing import sha256_file

# artifact.read_sums says the same things in other words; these are the findings' words.
_SUM_LINE = re.compile(r"([0-9a-f]{64}) [ *](\S+)")


@dataclass(frozen=True)
class Finding:
    name: str
    ok: bool | None  # None: not checked (said why)
    detail: str

    def line(self) -> str:
        mark = {True: "ok  ", False: "FAIL", None: "skip"}[self.ok]
        return f"{mark} {self.name}: {self.detail}"


class _Failed(Exception):
    pass


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_bytes())
    except FileNotFoundError:
        raise _Failed(f"{path.name} is missing") from None
    except (OSError, ValueError) as e:
        raise _Failed(f"{path.name} is not valid JSON ({e})") from None


@dataclass(frozen=True)
class _Subject:
    """What the evidence is about: a disk file, or a cloud image by id and raw digest."""

    name: str  # the subject's name in the provenance and SBOMs
    digest: str
    signed: str  # the file the signature is over
    ami: dict[str, Any] | None = None  # ami.json, for a cloud image


# Checks that need the cloud: given ami.json, a detail line, or a BakerError that fails it.
LiveCheck = Callable[[dict[str, Any]], str]


def verify(
    directory: Path,
    pub: Path | None,
    known: dict[str, str] | None = None,
    live: LiveCheck | None = None,
    trusted: tuple[Path, ...] = (),
    statements: Sequence[tuple[object, str]] = (),
) -> list[Finding]:
    """Every check of `baker verify`, for an artifact holding an image file or an EC2 image
    (ami.json). `known` gives sha256 hex digests the caller computed itself while writing
    the files (a pull hashes each blob as it streams), so a disk is not read again for them.
    `live` re-reads an EC2 image's snapshot and compares its digest (`--live`). With `pub`,
    a child's parent must have been verified with `pub` or one of the `trusted` keys.
    `statements` are revocations from elsewhere (a registry, a file), checked with the one
    beside the artifact against the image and its ancestors."""
    key = signing.load_public_key(pub) if pub else None
    known = known or {}
    subject = _subject(directory, known)
    findings: list[Finding] = []

    def check(name: str, fn: Callable[[], str]) -> None:
        try:
            findings.append(Finding(name, True, fn()))
        except _Failed as e:
            findings.append(Finding(name, False, str(e)))
        except BakerError as e:
            findings.append(Finding(name, False, str(e)))

    def same_digest(what: str, found: str | None) -> str:
        if found != subject.digest:
            raise _Failed(
                f"{what} names {found or 'no digest'}, but {subject.name} is {subject.digest}"
            )
        return f"names {subject.digest}"

    check(SUMS, lambda: _sums(directory, known))
    check(BUILD, lambda: _build(directory, subject, same_digest))
    check(BOOT, lambda: _boot(directory, same_digest))
    check(
        SBOM_CDX,
        lambda: _sbom(directory / SBOM_CDX, sbom_cdx.validate, sbom_cdx.subject, same_digest),
    )
    check(
        SBOM_SPDX,
        lambda: _sbom(directory / SBOM_SPDX, sbom_spdx.validate, sbom_spdx.subject, same_digest),
    )
    check(PROVENANCE, lambda: _provenance(directory, subject, same_digest))
    if (directory / VULNS).exists() or _scanned(directory):
        # A CycloneDX document about the same image: checked as the SBOM is.
        check(VULNS, lambda: _vulns(directory, same_digest))
    parent = _parent_of(directory)
    if parent is not None:
        keys = (pub, *trusted) if pub else ()
        check("lineage", lambda: _lineage(directory, parent, keys))
    beside = revocation.beside(directory)
    if beside or statements:
        readers = [signing.load_public_key(k) for k in (pub, *trusted)] if pub else []
        check("revocation", lambda: _revocation(directory, [*beside, *statements], readers))
    if key is None:
        findings.append(Finding("signature", None, "not checked: give --pub KEY"))
        findings.append(Finding(DSSE, None, "not checked: give --pub KEY"))
    else:
        check("signature", lambda: _signature(directory, subject, key, pub))
        check(DSSE, lambda: _dsse(directory, key))
    if subject.ami is not None:
        if live is None:
            findings.append(Finding("live", None, "not checked: give --live (and credentials)"))
        else:
            ami = subject.ami
            check("live", lambda: live(ami))
    return findings


def _subject(directory: Path, known: dict[str, str]) -> _Subject:
    if (directory / AMI).is_file() and not (directory / IMAGE).exists():
        try:
            ami = json.loads((directory / AMI).read_bytes())
            ref = f"ec2:{ami['region']}:{ami['image_id']}"
            raw = str(ami["raw_digest"])
        except (OSError, ValueError, KeyError, TypeError):
            raise InputError(
                f"{directory / AMI}: not an EC2 image record with a raw digest (made by a "
                "baker older than this one, or changed?)."
            ) from None
        return _Subject(ref, raw, AMI, ami)
    artifact.image_dir(directory)
    digest = f"sha256:{known.get(IMAGE) or sha256_file(directory / IMAGE)}"
    return _Subject(IMAGE, digest, IMAGE)


def _sums(directory: Path, known: dict[str, str]) -> str:
    path = directory / SUMS
    if not path.is_file():
        raise _Failed(f"{SUMS} is missing")
    listed: dict[str, str] = {}
    for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        m = _SUM_LINE.fullmatch(line)
        if not m or "/" in m.group(2):
            raise _Failed(f"line {n} is not a sha256sum line: {line[:80]!r}")
        listed[m.group(2)] = m.group(1)
    # A revocation comes after the build, signed itself: not one of the build's files.
    present = {p.name for p in directory.iterdir() if p.is_file()} - {SUMS, revocation.FILE}
    if unlisted := sorted(present - set(listed)):
        raise _Failed(f"not listed: {', '.join(unlisted)}")
    if missing := sorted(set(listed) - present):
        raise _Failed(f"listed but missing: {', '.join(missing)}")

    def actual(name: str) -> str:
        return known.get(name) or sha256_file(directory / name)

    if bad := sorted(name for name, h in listed.items() if actual(name) != h):
        raise _Failed(f"checksum mismatch: {', '.join(bad)}")
    return f"{len(listed)} files match"


def _build(
    directory: Path, subject: _Subject, same_digest: Callable[[str, str | None], str]
) -> str:
    # A missing record says so in the words of the other files' findings; any other defect
    # is read_record's InputError, which check() turns into a failed finding.
    if not (directory / BUILD).exists():
        raise _Failed(f"{BUILD} is missing")
    image = artifact.read_record(directory).image
    if subject.ami is None:
        return same_digest(BUILD, image.digest)
    if image.ami != subject.ami:
        raise _Failed(f"{BUILD} records another image than {AMI} holds")
    return same_digest(BUILD, (image.ami or {}).get("raw_digest"))


def _scanned(directory: Path) -> dict[str, Any] | None:
    """build.json's `scan`, if the build scanned (a broken build.json is its own check's)."""
    try:
        record = json.loads((directory / BUILD).read_bytes())
    except (OSError, ValueError):
        return None
    scan = record.get("scan") if isinstance(record, dict) else None
    return scan if isinstance(scan, dict) else None


def _vulns(directory: Path, same_digest: Callable[[str, str | None], str]) -> str:
    said = _sbom(directory / VULNS, sbom_cdx.validate, sbom_cdx.subject, same_digest)
    recorded = ((_scanned(directory) or {}).get("report") or {}).get("digest")
    actual = f"sha256:{sha256_file(directory / VULNS)}"
    if recorded != actual:
        raise _Failed(f"{VULNS} is {actual}, but build.json records {recorded}")
    return said


def _boot(directory: Path, same_digest: Callable[[str, str | None], str]) -> str:
    boot = _json(directory / BOOT)
    runs = boot.get("each_run") if isinstance(boot, dict) else None
    if not isinstance(runs, list) or not runs or boot.get("runs") != len(runs):
        raise _Failed(f"{BOOT} holds no boot runs")
    if boot.get("accel") not in ("kvm", "tcg", "ec2") or not isinstance(
        boot.get("time_to_ssh_s"), int | float
    ):
        raise _Failed(f"{BOOT} lacks accel or time_to_ssh_s")
    return same_digest(BOOT, boot.get("image"))


def _sbom(
    path: Path,
    validate: Callable[[bytes], list[str]],
    subject: Callable[[dict[str, Any]], str | None],
    same_digest: Callable[[str, str | None], str],
) -> str:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise _Failed(f"{path.name} is missing") from None
    if problems := validate(data):
        raise _Failed(f"not valid against its schema: {problems[0]}")
    doc = json.loads(data)
    return same_digest(path.name, subject(doc)) + ", schema valid"


def _provenance(
    directory: Path, subject: _Subject, same_digest: Callable[[str, str | None], str]
) -> str:
    doc = _json(directory / PROVENANCE)
    if problems := provenance.check(doc):
        raise _Failed(f"not an in-toto SLSA v1 statement: {problems[0]}")
    return same_digest(PROVENANCE, provenance.subject_digest(doc, subject.name))


def _revocation(
    directory: Path, envelopes: list[tuple[object, str]], keys: list[ec.EllipticCurvePublicKey]
) -> str:
    record = artifact.read_record(directory)
    image = record.image.digest or ""
    ancestors = revocation.ancestry(record.parent)
    return revocation.verdict(record.recipe.name, image, ancestors, envelopes, keys)


def _parent_of(directory: Path) -> artifact.ParentRecord | None:
    """A child's record of its parent image; None for an image built from packages."""
    try:
        return artifact.read_record(directory).parent
    except BakerError:  # the build.json finding says what is wrong with it
        return None


def _lineage(directory: Path, parent: artifact.ParentRecord, keys: tuple[Path, ...]) -> str:
    """A child's record of its parent is well formed, its provenance names the same, and
    (given `keys`) the key its parent was verified with is one of them."""
    digests = [parent.digest, parent.provenance_digest, *(a.digest for a in parent.ancestors)]
    if bad := [d for d in digests if not _DIGEST.fullmatch(d)]:
        raise _Failed(f"{BUILD}'s parent record holds a malformed digest {bad[0]!r}")
    doc = _json(directory / PROVENANCE)
    deps = doc.get("predicate", {}).get("buildDefinition", {}).get("resolvedDependencies", [])
    named = [d for d in deps if isinstance(d, dict) and d.get("name") == "parent-image"]
    if [d.get("digest") for d in named] != [{"sha256": parent.digest.removeprefix("sha256:")}]:
        raise _Failed(f"{PROVENANCE} does not name the parent {BUILD} records ({parent.digest})")
    chain = " ← ".join(f"{a.name} {a.digest[:19]}…" for a in [parent, *parent.ancestors])
    if not keys:
        return f"built on {chain}"
    ids = [signing.fingerprint(signing.load_public_key(k)) for k in keys]
    if parent.signer not in ids:
        raise _Failed(
            f"its parent {parent.name} was verified with key {parent.signer[:16]}…, none of "
            f"{', '.join(str(k) for k in keys)} (a parent's signer is trusted with --trust KEY)"
        )
    return f"built on {chain}; the parent signed by trusted key {parent.signer[:16]}…"


_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def _signature(
    directory: Path, subject: _Subject, key: ec.EllipticCurvePublicKey, pub: Path | None
) -> str:
    path = directory / f"{subject.signed}.sig"
    if not path.is_file():
        raise _Failed(f"{path.name} is missing (was the build signed?)")
    # Not UTF-8 is one more way of not being a signature, not a reason to stop.
    signature = path.read_text(errors="replace").strip()
    if not signing.verify_file(key, directory / subject.signed, signature):
        raise _Failed(f"{path.name} is not a valid signature of {subject.signed} by {pub}")
    return f"{subject.signed} signed by {signing.fingerprint(key)[:16]}…"


def _dsse(directory: Path, key: ec.EllipticCurvePublicKey) -> str:
    envelope = _json(directory / DSSE)
    if not isinstance(envelope, dict):
        raise _Failed("the envelope is not a JSON object")
    payload = signing.dsse_verify(key, envelope)
    try:
        published = (directory / PROVENANCE).read_bytes()
    except FileNotFoundError:
        raise _Failed(f"{PROVENANCE} is missing") from None
    if payload != published:
        raise _Failed(f"the signed statement differs from {PROVENANCE}")
    if envelope.get("payloadType") != "application/vnd.in-toto+json":
        raise _Failed(f"unexpected payloadType {envelope.get('payloadType')!r}")
    return f"signed statement equals {PROVENANCE}"


def signer(directory: Path) -> str | None:
    """The keyid of the DSSE envelope's first signature, if there is one."""
    try:
        envelope = json.loads((directory / DSSE).read_bytes())
        return str(envelope["signatures"][0]["keyid"])
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return None

"""Revocation statements: "the image with this digest must not be used, because …", signed.

A statement is an in-toto Statement (its subject the image digest, the qcow2's, which a
child's build.json names its parent by) in a DSSE envelope signed by the revoker's key, the
same envelope baker's provenance uses. It travels beside an artifact (revocation.dsse.json),
as a registry referrer of the image's manifest, and in a revocations file for air-gapped
sites ({"revocations": [envelope, …]}). A statement counts only when it verifies with a key
the reader trusts; the time in it is the revoker's clock, as it says when, not what was built.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from baker.artifact import ParentRecord
from baker.errors import BakerError, BuildError, InputError
from baker.evidence import signing
from baker.recipe import bounded

FILE = "revocation.dsse.json"  # beside a revoked artifact
MEDIA_TYPE = "application/vnd.baker.revocation.v1+json"  # its referrer's artifactType
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://baker.dev/revocation/v1"
MAX_REASON = 1000
MAX_FILE = 16 << 20  # a revocations file is read whole: bounded


@dataclass(frozen=True)
class Revocation:
    name: str  # the image's name when it was revoked
    image: str  # sha256:<hex>, the image digest
    reason: str
    revoked_at: str
    keyid: str  # the key it verified with
    envelope: dict[str, Any]

    def says(self) -> str:
        return f"revoked {self.revoked_at[:10]} by key {self.keyid[:16]}: {self.reason}"


class Revoked(BuildError):
    """An image, or one of its ancestors, is revoked."""


def sign(
    key: ec.EllipticCurvePrivateKey, name: str, image: str, reason: str, now: datetime
) -> dict[str, Any]:
    """The DSSE envelope revoking `image`."""
    reason = " ".join(reason.split())
    if not reason:
        raise InputError("--reason: say why the image is revoked.")
    if len(reason) > MAX_REASON:
        raise InputError(f"--reason: {len(reason)} characters; at most {MAX_REASON}.")
    statement = {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": name, "digest": {"sha256": image.removeprefix("sha256:")}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "reason": reason,
            "revokedAt": now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "revoker": signing.fingerprint(key.public_key()),
        },
    }
    payload = json.dumps(statement, sort_keys=True, separators=(",", ":")).encode()
    return signing.dsse_sign(key, payload)


def read(envelope: object, keys: Sequence[ec.EllipticCurvePublicKey], where: str) -> Revocation:
    """The statement in `envelope` if it verifies with one of `keys`; BuildError naming
    `where` otherwise (not signed by a trusted key, or not a revocation)."""
    if not keys:
        raise BuildError(f"{where}: no key to check the revocation with.")
    payload, last = None, ""
    for key in keys:
        try:
            payload = signing.dsse_verify(key, envelope)  # type: ignore[arg-type]
            keyid = signing.fingerprint(key)
            break
        except BakerError as e:
            last = str(e)
    if payload is None:
        raise BuildError(f"{where}: {last.rstrip('.')}.")
    try:
        doc = json.loads(payload)
        subject = doc["subject"][0]
        predicate = doc["predicate"]
        if doc["_type"] != STATEMENT_TYPE or doc["predicateType"] != PREDICATE_TYPE:
            raise ValueError
        image = "sha256:" + str(subject["digest"]["sha256"])
        return Revocation(
            str(subject["name"]),
            image,
            str(predicate["reason"]),
            str(predicate["revokedAt"]),
            keyid,
            envelope,  # type: ignore[arg-type]
        )
    except (ValueError, KeyError, IndexError, TypeError):
        raise BuildError(f"{where}: not a baker revocation statement.") from None


def collect(
    envelopes: Iterable[tuple[object, str]], keys: Sequence[ec.EllipticCurvePublicKey]
) -> tuple[list[Revocation], list[str]]:
    """(the statements that verify, one line for each that does not and is ignored)."""
    good, ignored = [], []
    for envelope, where in envelopes:
        try:
            good.append(read(envelope, keys, where))
        except BuildError as e:
            ignored.append(str(e))
    return good, ignored


def check(
    name: str,
    image: str,
    ancestors: Sequence[tuple[str, str]],
    revocations: Iterable[Revocation],
) -> None:
    """Raise Revoked when `image` or one of its (name, digest) ancestors is revoked."""
    by_image = {r.image: r for r in revocations}
    if (r := by_image.get(image)) is not None:
        raise Revoked(f"{name} ({image[:19]}) is {r.says()}")
    for ancestor, digest in ancestors:
        if (r := by_image.get(digest)) is not None:
            raise Revoked(f"{name} is built on {ancestor} ({digest[:19]}), which is {r.says()}")


def ancestry(parent: ParentRecord | None) -> list[tuple[str, str]]:
    """(name, image digest) of a build's parent and the parent's ancestors, nearest first."""
    if parent is None:
        return []
    return [(parent.name, parent.digest), *((a.name, a.digest) for a in parent.ancestors)]


def verdict(
    name: str,
    image: str,
    ancestors: Sequence[tuple[str, str]],
    envelopes: Sequence[tuple[object, str]],
    keys: Sequence[ec.EllipticCurvePublicKey],
) -> str:
    """A verify line: "not revoked …", or Revoked / BuildError saying why not."""
    if envelopes and not keys:
        # Unchecked statements are not trusted, nor ignored: the image is not passed.
        raise BuildError(f"{len(envelopes)} revocation statement(s) found; give --pub KEY")
    found, ignored = collect(envelopes, keys)
    check(name, image, ancestors, found)
    note = f"; {len(ignored)} not signed by a trusted key, ignored" if ignored else ""
    return f"not revoked ({len(found)} statements checked{note})"


def load_file(path: Path) -> list[tuple[object, str]]:
    """The envelopes of a revocations file, each with where it came from."""
    data = bounded.read_limited(
        path, MAX_FILE, "revocations file", "give the file `baker revocations export` wrote"
    )
    try:
        doc = json.loads(data)
        items = doc["revocations"]
        if not isinstance(items, list):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        raise InputError(
            f"--revocations {path}: not a revocations file (a JSON object with a "
            '"revocations" list, as `baker revocations export` writes).'
        ) from None
    return [(e, f"{path} statement {i + 1}") for i, e in enumerate(items)]


def dump_file(envelopes: Sequence[dict[str, Any]]) -> bytes:
    return json.dumps({"revocations": list(envelopes)}, indent=2, sort_keys=True).encode() + b"\n"


def beside(artifact: Path) -> list[tuple[object, str]]:
    """The statement written beside an artifact by `baker revoke`, if any."""
    path = artifact / FILE
    if not path.is_file():
        return []
    try:
        return [(json.loads(bounded.read_limited(path, MAX_FILE, "statement", "")), str(path))]
    except (ValueError, InputError):
        return [({}, str(path))]  # reported as not a revocation statement

"""`baker verify`: an artifact directory checked offline, every claim against every other.

Each check is independent and reports one line; a tampered or truncated file is a failed
check, never a crash, since what is verified here is by definition untrusted input.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from baker.errors import BakerError, InputError
from baker.evidence import provenance, sbom, signing
from baker.hashing import sha256_file

IMAGE = "image.qcow2"


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


def verify(directory: Path, pub: Path | None) -> list[Finding]:
    if not directory.is_dir():
        raise InputError(f"{directory}: not an artifact directory.")
    if not (directory / IMAGE).is_file():
        raise InputError(f"{directory}: no {IMAGE} here; is this a baker artifact directory?")
    key = signing.load_public_key(pub) if pub else None
    digest = f"sha256:{sha256_file(directory / IMAGE)}"
    findings: list[Finding] = []

    def check(name: str, fn: Callable[[], str]) -> None:
        try:
            findings.append(Finding(name, True, fn()))
        except _Failed as e:
            findings.append(Finding(name, False, str(e)))
        except BakerError as e:
            findings.append(Finding(name, False, str(e)))

    def same_digest(what: str, found: str | None) -> str:
        if found != digest:
            raise _Failed(f"{what} names {found or 'no digest'}, but {IMAGE} is {digest}")
        return f"names {digest}"

    check("SHA256SUMS", lambda: _sums(directory))
    check(
        "build.json",
        lambda: same_digest(
            "build.json", _json(directory / "build.json").get("image", {}).get("digest")
        ),
    )
    check("boot.json", lambda: _boot(directory, same_digest))
    check(
        "sbom.cdx.json",
        lambda: _sbom(
            directory / "sbom.cdx.json",
            sbom.validate_cyclonedx,
            sbom.cyclonedx_subject,
            same_digest,
        ),
    )
    check(
        "sbom.spdx.json",
        lambda: _sbom(
            directory / "sbom.spdx.json", sbom.validate_spdx, sbom.spdx_subject, same_digest
        ),
    )
    check("provenance.json", lambda: _provenance(directory, same_digest))
    if key is None:
        findings.append(Finding("signature", None, "not checked: give --pub KEY"))
        findings.append(Finding("provenance.dsse.json", None, "not checked: give --pub KEY"))
    else:
        check("signature", lambda: _signature(directory, key, pub))
        check("provenance.dsse.json", lambda: _dsse(directory, key))
    return findings


def _sums(directory: Path) -> str:
    path = directory / "SHA256SUMS"
    if not path.is_file():
        raise _Failed("SHA256SUMS is missing")
    listed: dict[str, str] = {}
    for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        m = re.fullmatch(r"([0-9a-f]{64}) [ *](\S+)", line)
        if not m or "/" in m.group(2):
            raise _Failed(f"line {n} is not a sha256sum line: {line[:80]!r}")
        listed[m.group(2)] = m.group(1)
    present = {p.name for p in directory.iterdir() if p.is_file()} - {"SHA256SUMS"}
    if unlisted := sorted(present - set(listed)):
        raise _Failed(f"not listed: {', '.join(unlisted)}")
    if missing := sorted(set(listed) - present):
        raise _Failed(f"listed but missing: {', '.join(missing)}")
    if bad := sorted(name for name, h in listed.items() if sha256_file(directory / name) != h):
        raise _Failed(f"checksum mismatch: {', '.join(bad)}")
    return f"{len(listed)} files match"


def _boot(directory: Path, same_digest: Callable[[str, str | None], str]) -> str:
    boot = _json(directory / "boot.json")
    runs = boot.get("each_run")
    if not isinstance(runs, list) or not runs or boot.get("runs") != len(runs):
        raise _Failed("boot.json holds no boot runs")
    if boot.get("accel") not in ("kvm", "tcg") or not isinstance(
        boot.get("time_to_ssh_s"), int | float
    ):
        raise _Failed("boot.json lacks accel or time_to_ssh_s")
    return same_digest("boot.json", boot.get("image"))


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


def _provenance(directory: Path, same_digest: Callable[[str, str | None], str]) -> str:
    doc = _json(directory / "provenance.json")
    if problems := provenance.check(doc):
        raise _Failed(f"not an in-toto SLSA v1 statement: {problems[0]}")
    return same_digest("provenance.json", provenance.subject_digest(doc, IMAGE))


def _signature(directory: Path, key: Any, pub: Path | None) -> str:
    path = directory / f"{IMAGE}.sig"
    if not path.is_file():
        raise _Failed(f"{path.name} is missing (was the build signed?)")
    if not signing.verify_file(key, directory / IMAGE, path.read_text().strip()):
        raise _Failed(f"{path.name} is not a valid signature of {IMAGE} by {pub}")
    return f"{IMAGE} signed by {signing.fingerprint(key)[:16]}…"


def _dsse(directory: Path, key: Any) -> str:
    envelope = _json(directory / "provenance.dsse.json")
    if not isinstance(envelope, dict):
        raise _Failed("the envelope is not a JSON object")
    payload = signing.dsse_verify(key, envelope)
    try:
        published = (directory / "provenance.json").read_bytes()
    except FileNotFoundError:
        raise _Failed("provenance.json is missing") from None
    if payload != published:
        raise _Failed("the signed statement differs from provenance.json")
    if envelope.get("payloadType") != "application/vnd.in-toto+json":
        raise _Failed(f"unexpected payloadType {envelope.get('payloadType')!r}")
    return "signed statement equals provenance.json"


def signer(directory: Path) -> str | None:
    """The keyid of the DSSE envelope's first signature, if there is one."""
    try:
        envelope = json.loads((directory / "provenance.dsse.json").read_bytes())
        return str(envelope["signatures"][0]["keyid"])
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return None

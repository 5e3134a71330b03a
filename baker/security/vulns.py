"""An image's packages matched against a vulnerability snapshot: the findings, the gate a
recipe sets on them, and the CycloneDX 1.6 vulnerability report (a VDR, with VEX analysis for
what Debian calls not affected) that is byte-identical for the same image and snapshot."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from debian.debian_support import Version
from packageurl import PackageURL

from baker import __version__
from baker.errors import BuildError, InputError
from baker.evidence import sbom_cdx
from baker.evidence.sbom import image_hex, purl, sort_packages
from baker.evidence.vuln_report import (
    PROP_DB_DIGEST,
    PROP_DB_KIND,
    PROP_FIXED,
    PROP_INSTALLED,
    PROP_RELEASE,
    PROP_SOURCE,
    PROP_STATUS,
    SEVERITIES,
    STATUSES,
    ReportSummary,
    read_report,
)
from baker.image.packages import Package
from baker.recipe.spec import UBUNTU_SUITES
from baker.security.vulndb import CODENAMES, RANK, Advisory, VulnDB, load

__all__ = ["ReportSummary", "read_report"]  # read where the report is read (inspect)

# Why an Ubuntu image is refused a scan wherever one is asked for (the build's scan.db or
# --vuln-db, `baker scan`): Debian's tracker and OSV's Debian records would report it clean.
NOT_UBUNTU = "the snapshots baker reads are Debian's: an Ubuntu image cannot be scanned yet"


# Not the SBOM's namespace: an image's SBOM and its vulnerability report are two documents.
_SERIAL_NAMESPACE = uuid.uuid5(
    uuid.NAMESPACE_URL, "https://baker.invalid/cyclonedx/vulnerabilities"
)
_DISTROS = {codename: f"debian-{number}" for number, codename in CODENAMES.items()}
_SOURCES = {"debian-tracker": ("Debian Security Tracker", "https://security-tracker.debian.org/tracker/"),
            "osv": ("OSV", "https://osv.dev/vulnerability/")}  # fmt: skip


@dataclass(frozen=True)
class Finding:
    """One advisory against one installed source package."""

    id: str
    aliases: tuple[str, ...]
    source: str
    installed: str  # the source package's version
    fixed: str | None
    severity: str  # one of vulndb.SEVERITIES
    status: str  # one of STATUSES
    packages: tuple[str, ...]  # the binary packages built from that source, by name
    purls: tuple[str, ...]  # the same binary packages (every architecture), as package URLs


@dataclass(frozen=True)
class Scanned:
    findings: list[Finding]
    report: bytes  # the CycloneDX document
    db: VulnDB


def scan(
    db_path: Path, release: str, packages: Sequence[Package], image_name: str, image_digest: str
) -> Scanned:
    """`packages` of the image `image_digest` against the snapshot at `db_path`: what a
    build's scan step and `baker scan` of a published artifact both do."""
    if release in UBUNTU_SUITES:  # Debian's tracker and OSV's Debian records: no Ubuntu
        raise InputError(f"{db_path}: {release} is Ubuntu's, and {NOT_UBUNTU}.")
    db = load(db_path, releases={release})
    if release not in db.releases:
        raise InputError(f"{db_path}: the snapshot says nothing of Debian {release}.")
    findings = match(db, release, packages)
    document = report(findings, image_name, image_digest, db.digest, db.kind, release)
    return Scanned(findings, document, db)


def match(db: VulnDB, release: str, packages: Sequence[Package]) -> list[Finding]:
    """What `db` says of `packages` in `release`; a fixed issue is no finding at all."""
    by_source: dict[tuple[str, str], list[Package]] = {}
    for p in sort_packages(packages):
        by_source.setdefault((p.source, p.source_version), []).append(p)
    distro = _DISTROS.get(release, release)
    out = []
    for (source, installed), binaries in by_source.items():
        names = tuple(dict.fromkeys(p.name for p in binaries))
        purls = tuple(purl(p, distro) for p in binaries)
        for a in db.advisories(release, source):
            status = _status(a, installed)
            if status is not None:
                out.append(Finding(a.id, a.aliases, source, installed, a.fixed, a.severity,
                                   status, names, purls))  # fmt: skip
    return sorted(out, key=_order)


def _status(a: Advisory, installed: str) -> str | None:
    if a.not_affected:
        return "not-affected"
    if a.fixed is None:
        return "no-fix"
    try:
        patched = Version(installed) >= Version(a.fixed)
    except ValueError:
        # A fixed version dpkg cannot parse proves nothing: report, don't pass in silence.
        return "fixable"
    return None if patched else "fixable"


def _order(f: Finding) -> tuple[int, str, str, str]:
    return -RANK[f.severity], f.id, f.source, f.installed


@dataclass(frozen=True)
class Ignore:
    """A finding accepted, with the reason why, until a date (the day itself included)."""

    id: str  # the finding's id or one of its aliases (a DSA stands for all its CVEs)
    reason: str
    until: date

    def __post_init__(self) -> None:
        if not self.reason.strip():
            raise InputError(f"the ignore of {self.id} gives no reason; say why it is accepted.")

    def covers(self, f: Finding) -> bool:
        return self.id == f.id or self.id in f.aliases


@dataclass(frozen=True)
class Verdict:
    failing: list[Finding]
    ignored: list[tuple[Finding, Ignore]]  # findings that would fail but for an ignore
    expired: list[Ignore]  # ignores past their date: they no longer apply
    fail_on: str | None
    fixable_only: bool

    def message(self) -> str | None:
        """One line saying why the gate failed; None when it passed."""
        if not self.failing:
            return None
        n, worst = len(self.failing), self.failing[0]
        scope = " with a fix in the suite" if self.fixable_only else ""
        fix = f"fixed in {worst.fixed}" if worst.fixed else "with no fix yet"
        lapsed = next((i for i in self.expired if i.covers(worst)), None)
        note = f" (its ignore expired on {lapsed.until.isoformat()})" if lapsed else ""
        return (
            f"the vulnerability gate failed: {n} finding{'s' if n != 1 else ''} at or above "
            f"{self.fail_on}{scope}, the worst {worst.id} ({worst.severity}) in {worst.source} "
            f"{worst.installed}, {fix}{note}"
        )


def gate(
    findings: Iterable[Finding],
    fail_on: str | None,
    fixable_only: bool,
    ignores: Sequence[Ignore],
    today: date,
) -> Verdict:
    """Which findings fail the build. "unknown" ranks below "low", so no threshold but
    "unknown" or "none" trips on it: a finding nobody has assessed yet (Debian's "not yet
    assigned") failing every high-only gate would cry wolf until the wolf is ignored."""
    if fail_on is not None and fail_on not in RANK:
        raise InputError(f"fail_on {fail_on!r} is none of {', '.join(SEVERITIES)}.")
    active = [i for i in ignores if i.until >= today]
    failing: list[Finding] = []
    ignored: list[tuple[Finding, Ignore]] = []
    for f in sorted(findings, key=_order):
        if fail_on is None or f.status == "not-affected" or RANK[f.severity] < RANK[fail_on]:
            continue
        if fixable_only and f.status != "fixable":
            continue
        ignore = next((i for i in active if i.covers(f)), None)
        if ignore is None:
            failing.append(f)
        else:
            ignored.append((f, ignore))
    expired = [i for i in ignores if i.until < today]
    return Verdict(failing, ignored, expired, fail_on, fixable_only)


def counts(findings: Iterable[Finding]) -> dict[str, dict[str, int]]:
    """severity -> status -> how many, every key present so that consumers need no defaults."""
    out = {s: dict.fromkeys(STATUSES, 0) for s in SEVERITIES}
    for f in findings:
        out[f.severity][f.status] += 1
    return out


def report(
    findings: Sequence[Finding],
    image_name: str,
    image_digest: str,
    db_digest: str,
    db_kind: str,
    release: str,
) -> bytes:
    """CycloneDX 1.6 JSON of the findings about the image, schema-checked. No timestamp: the
    same image and snapshot give the same bytes, so a report can be compared and signed."""
    hexdigest = image_hex(image_digest)
    purls = sorted({p for f in findings for p in f.purls})
    doc = {
        "$schema": "http://cyclonedx.org/schema/bom-1.6.schema.json",
        "bomFormat": "CycloneDX",
        "specVersion": sbom_cdx.CDX_VERSION,
        "serialNumber": f"urn:uuid:{uuid.uuid5(_SERIAL_NAMESPACE, f'{image_digest} {db_digest}')}",
        "version": 1,
        "metadata": {
            "component": {
                "type": "file",  # the qcow2's bytes, as in the SBOM
                "bom-ref": f"image:{image_name}@{image_digest}",
                "name": image_name,
                "version": hexdigest,
                "hashes": [{"alg": "SHA-256", "content": hexdigest}],
            },
            "tools": {
                "components": [{"type": "application", "name": "baker", "version": __version__}]
            },
            "properties": _properties(
                [(PROP_DB_DIGEST, db_digest), (PROP_DB_KIND, db_kind), (PROP_RELEASE, release)]
            ),
        },
        # The affected debs, so that every `affects` ref resolves inside this document.
        "components": [_component(p) for p in purls],
        "vulnerabilities": [_vulnerability(f, db_kind) for f in sorted(findings, key=_order)],
    }
    data = (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()
    errors = sbom_cdx.validate(data)
    if errors:
        raise BuildError(f"generated vulnerability report is invalid: {'; '.join(errors)}")
    return data


def _component(ref: str) -> dict[str, Any]:
    p = PackageURL.from_string(ref)
    return {"type": "library", "bom-ref": ref, "name": p.name, "version": p.version, "purl": ref}


def _source(kind: str, vid: str) -> dict[str, str]:
    name, url = _SOURCES.get(kind, (kind, ""))
    return {"name": name, "url": url + vid} if url else {"name": name}


def _vulnerability(f: Finding, kind: str) -> dict[str, Any]:
    unaffected = f.status == "not-affected"
    # "in_triage", not "exploitable": the version is in the affected range, but whether the
    # flaw can be reached in this image (its configuration, its services) is not analysed.
    analysis: dict[str, str] = {"state": "not_affected" if unaffected else "in_triage"}
    if unaffected:
        analysis["justification"] = "code_not_present"
        analysis["detail"] = "Debian records the release as never affected."
    out: dict[str, Any] = {
        "bom-ref": f"vuln:{f.id}:{f.source}@{f.installed}",
        "id": f.id,
        "source": _source(kind, f.id),
        "ratings": [{"source": _source(kind, f.id), "severity": f.severity}],
        "analysis": analysis,
        "affects": [
            {
                "ref": p,
                "versions": [
                    {
                        "version": PackageURL.from_string(p).version or "",
                        "status": "unaffected" if unaffected else "affected",
                    }
                ],
            }
            for p in f.purls
        ],
        "properties": _properties(
            [
                (PROP_STATUS, f.status),
                (PROP_SOURCE, f.source),
                (PROP_INSTALLED, f.installed),
                (PROP_FIXED, f.fixed),
            ]
        ),
    }
    if f.aliases:
        out["references"] = [{"id": a, "source": _source(kind, a)} for a in f.aliases]
    if f.status == "fixable":
        out["recommendation"] = f"Upgrade {f.source} to {f.fixed} or later."
    return out


def _properties(pairs: list[tuple[str, str | None]]) -> list[dict[str, str]]:
    return [{"name": k, "value": v} for k, v in pairs if v is not None]

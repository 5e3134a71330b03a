"""The vulnerability report (vulns.cdx.json) as its readers need it: its property names, the
severities and statuses it uses, and what it says in brief (baker inspect, baker verify).
Written by baker.security.vulns; read here, below the packages that read artifacts."""

from __future__ import annotations

import json
from dataclasses import dataclass

from baker.errors import InputError
from baker.evidence import sbom_cdx

SEVERITIES = ("critical", "high", "medium", "low", "unknown", "none")  # gravest first
STATUSES = ("fixable", "no-fix", "not-affected")
PROP_STATUS = "baker:vuln:status"
PROP_FIXED = "baker:vuln:fixed-version"
PROP_INSTALLED = "baker:vuln:installed-version"
PROP_SOURCE = "baker:vuln:source"
PROP_DB_DIGEST = "baker:vulndb:digest"
PROP_DB_KIND = "baker:vulndb:kind"
PROP_RELEASE = "baker:vuln:release"


@dataclass(frozen=True)
class ReportSummary:
    image_digest: str | None
    db_digest: str
    db_kind: str
    release: str
    counts: dict[str, dict[str, int]]
    fixable: tuple[str, ...] = ()  # the ids a rebuild on the suite would fix, sorted


def read_report(data: bytes) -> ReportSummary:
    """What a vulnerability report says, in brief; InputError if it is not one of ours."""
    errors = sbom_cdx.validate(data)
    if errors:
        raise InputError(f"the vulnerability report is not valid CycloneDX 1.6: {errors[0]}.")
    doc = json.loads(data)
    meta = {p.get("name"): p.get("value") for p in doc.get("metadata", {}).get("properties", [])}
    if not all(isinstance(meta.get(k), str) for k in (PROP_DB_DIGEST, PROP_DB_KIND, PROP_RELEASE)):
        raise InputError("the document is no baker vulnerability report: it names no snapshot.")
    tally = {s: dict.fromkeys(STATUSES, 0) for s in SEVERITIES}
    fixable: set[str] = set()
    for v in doc.get("vulnerabilities", []):
        status = {p.get("name"): p.get("value") for p in v.get("properties", [])}.get(PROP_STATUS)
        severity = next((r.get("severity") for r in v.get("ratings", [])), None)
        if severity not in tally or status not in STATUSES:
            raise InputError(f"the vulnerability report's {v.get('id')} has no status or severity.")
        tally[severity][status] += 1
        if status == "fixable":
            fixable.add(str(v.get("id")))
    return ReportSummary(sbom_cdx.subject(doc), meta[PROP_DB_DIGEST], meta[PROP_DB_KIND],
                         meta[PROP_RELEASE], tally, tuple(sorted(fixable)))  # fmt: skip

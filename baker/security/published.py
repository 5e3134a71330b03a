"""`baker scan` of a published artifact: its packages and Debian release from its own SBOM
(what the build recorded of the image, signed with it), against a snapshot given now; and the
leak check of its image, opened read-only."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from packageurl import PackageURL

from baker import artifact
from baker.errors import InputError
from baker.evidence.sbom_cdx import PROP_ARCH, PROP_SOURCE, PROP_SOURCE_VERSION
from baker.image.packages import Package
from baker.inspect import disk
from baker.recipe.safety import Allowed
from baker.security import leaks, vulndb, vulns


def packages(directory: Path) -> tuple[list[Package], str]:
    """The image's packages and its Debian release (bookworm), from its CycloneDX SBOM."""
    sbom = directory / artifact.SBOM_CDX
    try:
        doc = json.loads(sbom.read_bytes())
    except (OSError, ValueError) as e:
        raise InputError(f"{sbom}: cannot read the artifact's SBOM ({e}).") from None
    out, distros = [], set()
    for c in doc.get("components") or []:
        props = {p.get("name"): p.get("value") for p in c.get("properties") or []}
        name, version = c.get("name"), c.get("version")
        if not (isinstance(name, str) and isinstance(version, str) and c.get("purl")):
            continue
        distro = PackageURL.from_string(c["purl"]).qualifiers.get("distro", "")
        distros.add(str(distro))
        out.append(Package(name, version, props.get(PROP_ARCH) or "",
                           props.get(PROP_SOURCE) or name,
                           props.get(PROP_SOURCE_VERSION) or version))  # fmt: skip
    releases = {vulndb.CODENAMES.get(d.removeprefix("debian-")) for d in distros}
    if len(releases) != 1 or None in releases:
        raise InputError(f"{sbom}: the SBOM names no one Debian release ({sorted(distros)}).")
    (release,) = releases
    assert release is not None
    return out, release


def scan(directory: Path, db_path: Path) -> tuple[list[vulns.Finding], bytes, vulndb.VulnDB]:
    """The findings and the report for the artifact in `directory` against `db_path`."""
    record = artifact.read_record(directory)
    pkgs, release = packages(directory)
    db = vulndb.load(db_path, releases={release})
    if release not in db.releases:
        raise InputError(f"{db_path}: the snapshot says nothing of Debian {release}.")
    findings = vulns.match(db, release, pkgs)
    report = vulns.report(findings, record.recipe.name, record.image.digest or "", db.digest,
                          db.kind, release)  # fmt: skip
    return findings, report, db


def leak_check(directory: Path, work: Path | None) -> list[leaks.Leak]:
    """The leak check of the artifact's image, letting through what its build did (its
    allowlist and declared files); no build secrets: their values are gone with the build."""
    image = directory / artifact.IMAGE
    if not image.is_file():
        raise InputError(f"{directory}: no {artifact.IMAGE} to look into.")
    kept = artifact.read_record(directory).leak_check or {}
    allow = [Allowed.model_validate(a) for a in kept.get("allow") or []]
    checker = leaks.Checker({}, list(kept.get("declared") or []), allow)
    with disk.scratch(work) as scratch, contextlib.ExitStack() as opened:
        return leaks.check_tree(disk.open_image(image, "scan", scratch, opened).root, checker)

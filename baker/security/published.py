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
from baker.evidence import sbom_cdx
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
    distros = {
        str(PackageURL.from_string(c["purl"]).qualifiers.get("distro", ""))
        for c in doc.get("components") or []
        if c.get("purl")
    }
    if any(d.startswith("ubuntu-") for d in distros):
        said = ", ".join(sorted(distros))
        raise InputError(f"{sbom}: the image is Ubuntu's ({said}), and {vulns.NOT_UBUNTU}.")
    releases = {vulndb.CODENAMES.get(d.removeprefix("debian-")) for d in distros}
    if len(releases) != 1 or None in releases:
        raise InputError(f"{sbom}: the SBOM names no one Debian release ({sorted(distros)}).")
    (release,) = releases
    assert release is not None
    return sbom_cdx.debs(doc), release


def scan(directory: Path, db_path: Path) -> vulns.Scanned:
    """The findings and the report for the artifact in `directory` against `db_path`."""
    record = artifact.read_record(directory)
    pkgs, release = packages(directory)
    return vulns.scan(db_path, release, pkgs, record.recipe.name, record.image.digest or "")


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

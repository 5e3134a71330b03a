"""What the CycloneDX and the SPDX SBOM share: the package URL of a deb, the image digest's
hex, the package order, and reading a deb purl back.

The documents themselves are built and checked in sbom_cdx and sbom_spdx; licence names come
from licenses. Both documents are byte-identical for identical inputs: every identifier that
the libraries would otherwise draw at random or from the clock is derived from the image digest
and SOURCE_DATE_EPOCH.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from packageurl import PackageURL

from baker.errors import BuildError
from baker.image.packages import Package

# The purl qualifier that lets scanners pick the right vulnerability feed without a separate
# operating-system component: debian-12 for bookworm, debian-13 for trixie, ubuntu-24.04 for
# noble; its first word is the purl's namespace.
DISTRO = "debian-12"


@dataclass(frozen=True)
class Lineage:
    """A child image's parent, for the SBOMs to say which packages came from it."""

    name: str
    digest: str
    packages: dict[str, str]  # the parent's packages: name -> version

    def inherited(self, p: Package) -> bool:
        """`p` is in the image as the parent had it (a version the child changed is the
        child's)."""
        return self.packages.get(p.name) == p.version


@dataclass(frozen=True)
class Subject:
    """What an SBOM describes: the image, the packages in it, and who made the document."""

    image_name: str
    image_file: str
    image_digest: str
    packages: list[Package]
    licenses: dict[str, list[str]]  # binary package -> its DEP-5 licence short names
    source_date_epoch: int
    tool_version: str
    distro: str = DISTRO
    parent: Lineage | None = None


_DIGEST = re.compile(r"sha256:([0-9a-f]{64})")


def purl(p: Package, distro: str = DISTRO) -> str:
    """The package's purl: pkg:deb/debian/NAME@V?arch=A&distro=debian-12, and under
    pkg:deb/ubuntu for an Ubuntu distro (ubuntu-24.04), as purl's deb type names them."""
    return PackageURL(
        type="deb",
        namespace=distro.split("-", 1)[0],
        name=p.name,
        version=p.version,
        qualifiers={"arch": p.architecture, "distro": distro},
    ).to_string()


def image_hex(image_digest: str) -> str:
    """The hex digits of 'sha256:<hex>'; BuildError for anything else."""
    m = _DIGEST.fullmatch(image_digest)
    if not m:
        raise BuildError(f"image digest {image_digest!r} is not 'sha256:<64 hex digits>'")
    return m.group(1)


def sort_packages(packages: Iterable[Package]) -> list[Package]:
    # dpkg's status order is not ours to rely on; output bytes must not depend on it.
    return sorted(packages, key=lambda p: (p.name, p.architecture, p.version))


def deb_arch(ref: object) -> str | None:
    """The arch qualifier of a deb purl; None if `ref` is no deb purl."""
    if not isinstance(ref, str) or not ref.startswith("pkg:deb/"):
        return None
    try:
        parsed = PackageURL.from_string(ref)
    except ValueError:
        return None
    qualifiers = parsed.qualifiers if isinstance(parsed.qualifiers, dict) else {}
    return qualifiers.get("arch", "")

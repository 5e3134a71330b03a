"""What `baker diff` says about packages: the changes between two images' CycloneDX SBOMs,
by name, with multiarch packages told apart by architecture."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from baker.errors import InputError
from baker.evidence import sbom_cdx


@dataclass(frozen=True)
class PackageChange:
    name: str
    old: str | None  # version; None = absent
    new: str | None


def compare(a: Path | None, b: Path | None) -> tuple[tuple[PackageChange, ...], bool]:
    """The changes from SBOM `a` to SBOM `b`, and whether they were compared at all (both
    sides need one)."""
    if a is None or b is None:
        return (), False
    return changes(_sbom_packages(a), _sbom_packages(b)), True


def _sbom_packages(path: Path) -> set[tuple[str, str, str]]:
    try:
        doc = json.loads(path.read_bytes())
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: not a readable JSON SBOM ({e}).") from None
    if not isinstance(doc, dict):
        raise InputError(f"{path}: not a CycloneDX SBOM (the top level is no JSON object).")
    return sbom_cdx.packages_in(doc)


def changes(
    old: set[tuple[str, str, str]], new: set[tuple[str, str, str]]
) -> tuple[PackageChange, ...]:
    """The changes between two sets of (name, version, arch), sorted by name."""

    def by_name(pkgs: set[tuple[str, str, str]]) -> dict[str, dict[str, str]]:
        out: dict[str, dict[str, str]] = {}
        for name, version, arch in pkgs:
            out.setdefault(name, {})[arch] = version
        return out

    a, b = by_name(old), by_name(new)
    found: list[PackageChange] = []
    for name in sorted(a.keys() | b.keys()):
        va, vb = a.get(name, {}), b.get(name, {})
        if len(va) <= 1 and len(vb) <= 1:
            # The usual case, one architecture per name: an arch change (amd64 -> all) is
            # still one package changing, not one removed and another added.
            (arch_a, ver_a), (arch_b, ver_b) = _only(va), _only(vb)
            if ver_a == ver_b and arch_a != arch_b and ver_a is not None:
                ver_a, ver_b = f"{ver_a} ({arch_a})", f"{ver_b} ({arch_b})"
            if ver_a != ver_b:
                found.append(PackageChange(name, ver_a, ver_b))
            continue
        # Multiarch (libc6:amd64 and libc6:i386): each architecture is its own package.
        for arch in sorted(va.keys() | vb.keys()):
            if va.get(arch) != vb.get(arch):
                found.append(PackageChange(f"{name}:{arch}", va.get(arch), vb.get(arch)))
    return tuple(found)


def _only(versions: dict[str, str]) -> tuple[str | None, str | None]:
    return next(iter(versions.items()), (None, None))

"""Licences as Debian packages declare them: the short names of a machine-readable (DEP-5)
copyright file, and which of them already are SPDX licence ids."""

from __future__ import annotations

from cyclonedx.spdx import fixup_id
from license_expression import LicenseSymbol
from spdx_tools.common.spdx_licensing import spdx_licensing


def _paragraphs(text: str) -> list[dict[str, str]]:
    """deb822 paragraphs as {lower-cased field name: first line of the value}."""
    paragraphs: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if current:
                paragraphs.append(current)
            current = {}
        elif line[0] in " \t#":
            continue  # continuation lines carry licence texts, not short names
        elif ":" in line:
            key, _, value = line.partition(":")
            current[key.strip().lower()] = " ".join(value.split())
    if current:
        paragraphs.append(current)
    return paragraphs


def licenses_from_copyright(text: str) -> list[str]:
    """Licence short names declared in a Debian machine-readable (DEP-5) copyright file
    (every `License:` field's first line, in the header or files paragraphs), deduplicated, sorted.
    [] when the file is not machine-readable or declares none."""
    paragraphs = _paragraphs(text)
    # DEP-5 requires Format in the header; pre-1.0 drafts called it Format-Specification.
    if not paragraphs or not ({"format", "format-specification"} & paragraphs[0].keys()):
        return []
    # Stand-alone License paragraphs only hold texts for names used elsewhere, and may hold
    # texts no file uses, so they are not declarations.
    declaring = [paragraphs[0], *(p for p in paragraphs[1:] if "files" in p)]
    return sorted({p["license"] for p in declaring if p.get("license")})


def spdx_id(name: str) -> str | None:
    """The current SPDX licence id a Debian short name is; None if it is not one.

    Debian's own names (GPL-2+, Expat, ...) are deliberately not translated: the SBOM reports
    what the package declares, and only names that already are SPDX ids are presented as such.
    """
    if fixup_id(name) is None:
        return None
    # license-expression turns deprecated ids into their successors (LGPL-2.1+ ->
    # LGPL-2.1-or-later) and spdx-tools writes what it returns, so both documents use its
    # spelling; CycloneDX's schema enum must know that spelling too.
    parsed = spdx_licensing.parse(name)
    if not isinstance(parsed, LicenseSymbol) or spdx_licensing.validate(parsed).errors:
        return None
    canonical = str(parsed)
    return canonical if fixup_id(canonical) == canonical else None

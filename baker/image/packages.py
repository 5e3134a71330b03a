"""The packages installed in an image, read from its dpkg status database."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Package:
    name: str
    version: str
    architecture: str
    source: str
    source_version: str


def parse_status(text: str) -> list[Package]:
    """Installed packages from /var/lib/dpkg/status, sorted by name."""
    out: list[Package] = []
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line[:1] in (" ", "\t") or ":" not in line:
                continue  # continuation lines of multi-line fields
            key, _, value = line.partition(":")
            fields[key] = value.strip()
        if "Package" not in fields or not fields.get("Status", "").endswith(" installed"):
            continue
        version = fields.get("Version", "")
        # "Source: name (version)" when the source version differs from the binary's.
        src = fields.get("Source", fields["Package"])
        src_name, _, rest = src.partition(" ")
        src_version = rest.strip("() ") or version
        out.append(
            Package(
                fields["Package"], version, fields.get("Architecture", ""), src_name, src_version
            )
        )
    return sorted(out)

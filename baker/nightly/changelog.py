"""What an upgrade fixed, read offline from the package's own Debian changelog.

For a package upgraded from OLD to NEW, the entries with OLD < version <= NEW (dpkg's
version order) are the changes that came in; their CVE ids, the Debian bugs they close
(policy §4.4's `Closes:` syntax) and whether any was uploaded to a security suite are what a
team wants to read in the morning. python-debian parses the changelog and orders versions.
"""

from __future__ import annotations

import gzip
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from debian.changelog import Changelog
from debian.debian_support import Version

_CVE = re.compile(r"\bCVE-\d{4}-\d{4,}\b")
# Debian policy 4.4: /closes:\s*(?:bug)?\#?\s?\d+(?:,\s*(?:bug)?\#?\s?\d+)*/i
_CLOSES = re.compile(r"closes:\s*(?:bug)?#?\s?\d+(?:,\s*(?:bug)?#?\s?\d+)*", re.IGNORECASE)
_NUMBER = re.compile(r"\d+")
MAX_CHANGELOG = 8 * 1024 * 1024  # uncompressed; a larger one is read no further


@dataclass(frozen=True)
class Fixes:
    versions: list[str] = field(default_factory=list)  # the entries between, newest first
    cves: list[str] = field(default_factory=list)
    bugs: list[int] = field(default_factory=list)
    security: bool = False  # some entry was uploaded to a -security suite

    def as_dict(self) -> dict[str, object]:
        return {
            "versions": self.versions,
            "cves": self.cves,
            "bugs": self.bugs,
            "security": self.security,
        }


def fixes(text: str, old: str, new: str) -> Fixes:
    """The fixes of the changelog entries in (old, new]."""
    low, high = Version(old), Version(new)
    versions: list[str] = []
    cves: set[str] = set()
    bugs: set[int] = set()
    security = False
    for block in Changelog(text, strict=False, max_blocks=None):
        if block.version is None or not (low < block.version <= high):
            continue
        versions.append(str(block.version))
        body = " ".join(line.strip() for line in block.changes())
        cves.update(_CVE.findall(body))
        for closes in _CLOSES.findall(body):
            bugs.update(int(n) for n in _NUMBER.findall(closes))
        suites = (block.distributions or "").split()
        security = security or any(d.endswith("-security") for d in suites)
    return Fixes(versions, sorted(cves, key=_cve_order), sorted(bugs), security)


def _cve_order(cve: str) -> tuple[int, int]:
    _, year, number = cve.split("-")
    return int(year), int(number)


def read(path: Path) -> str | None:
    """A changelog.Debian.gz as text (bounded), or None if it is missing or unreadable."""
    try:
        with gzip.open(path, "rb") as f:
            data = f.read(MAX_CHANGELOG)
    except (OSError, EOFError, zlib.error):
        return None
    return data.decode("utf-8", errors="replace")


def find(root: Path, package: str, source: str) -> Path | None:
    """The changelog of `package` inside the image tree at `root`: its own doc directory, or
    its source package's (binary packages of one source often share one), never a path
    that leads out of the tree."""
    for name in dict.fromkeys([package, source]):
        path = root / "usr/share/doc" / name / "changelog.Debian.gz"
        try:
            resolved = path.resolve()
        except OSError:
            continue
        if resolved.is_relative_to(root.resolve()) and resolved.is_file():
            return resolved
    return None

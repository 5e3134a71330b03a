"""The drift report: what tonight's image changed against the last good one, and why.

Packages added, removed and upgraded come from the two CycloneDX SBOMs (binary and source
package, source version); for each upgraded source package, the CVE ids and Debian bugs its
new version fixes are read from its own changelog.Debian.gz inside tonight's image, mounted
read-only (baker.nightly.changelog); the files changed come from `baker diff`; size, boot time
and test outcomes from the two artifacts' records.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

from baker import artifact
from baker.evidence import sbom_cdx
from baker.inspect import diff as differ
from baker.inspect import disk
from baker.nightly import changelog

MAX_FILES = 200  # listed in the report; the count says how many more


def packages(sbom: Path) -> dict[str, dict[str, str]]:
    """name -> {version, source, source_version} of every package in a CycloneDX SBOM."""
    return {
        p.name: {"version": p.version, "source": p.source, "source_version": p.source_version}
        for p in sbom_cdx.debs(json.loads(sbom.read_bytes()))
    }


def tests(junit: Path) -> dict[str, str]:
    """test id -> passed, failed or skipped, from a JUnit file (empty when there is none)."""
    try:
        root = ElementTree.parse(junit).getroot()
    except (OSError, ElementTree.ParseError):
        return {}
    out = {}
    for case in root.iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        if case.find("failure") is not None or case.find("error") is not None:
            out[name] = "failed"
        elif case.find("skipped") is not None:
            out[name] = "skipped"
        else:
            out[name] = "passed"
    return out


def boot_median(directory: Path) -> float | None:
    try:
        value = json.loads((directory / artifact.BOOT).read_bytes()).get("time_to_ssh_s")
    except (OSError, ValueError):
        return None
    return float(value) if isinstance(value, int | float) else None


def report(old: Path, new: Path, workdir: Path | None = None) -> dict[str, Any]:
    """The drift of artifact directory `new` against `old`."""
    before, after = packages(old / artifact.SBOM_CDX), packages(new / artifact.SBOM_CDX)
    upgraded = [
        n
        for n in sorted(before.keys() & after.keys())
        if before[n]["version"] != after[n]["version"]
    ]
    fixes = _fixes(new, {n: (before[n], after[n]) for n in upgraded}, workdir)
    changes = differ.diff(old, new, workdir)
    old_size, new_size = (
        (old / artifact.IMAGE).stat().st_size,
        (new / artifact.IMAGE).stat().st_size,
    )
    old_boot, new_boot = boot_median(old), boot_median(new)
    old_tests, new_tests = tests(old / artifact.JUNIT), tests(new / artifact.JUNIT)
    return {
        "old_digest": changes.a_digest,
        "new_digest": changes.b_digest,
        "packages": {
            "added": [{"name": n, **after[n]} for n in sorted(after.keys() - before.keys())],
            "removed": [{"name": n, **before[n]} for n in sorted(before.keys() - after.keys())],
            "upgraded": [
                {
                    "name": n,
                    "source": after[n]["source"],
                    "old": before[n]["version"],
                    "new": after[n]["version"],
                    **fixes.get(after[n]["source"], {}),
                }
                for n in upgraded
            ],
        },
        "files": [{"path": f.path, "kind": f.kind} for f in changes.files[:MAX_FILES]],
        "files_changed": len(changes.files),
        "size": _delta(old_size, new_size),
        "boot_s": _delta(old_boot, new_boot),
        "tests": [
            {"test": t, "old": old_tests.get(t, "absent"), "new": new_tests.get(t, "absent")}
            for t in sorted(old_tests.keys() | new_tests.keys())
            if old_tests.get(t) != new_tests.get(t)
        ],
    }


def _delta(old: float | None, new: float | None) -> dict[str, float | None]:
    if old is None or new is None:
        return {"old": old, "new": new, "delta": None, "pct": None}
    pct = round((new - old) / old * 100, 1) if old else None
    return {"old": old, "new": new, "delta": round(new - old, 3), "pct": pct}


def _fixes(
    image_dir: Path,
    upgraded: dict[str, tuple[dict[str, str], dict[str, str]]],
    workdir: Path | None,
) -> dict[str, dict[str, Any]]:
    """source package -> what its upgrade fixed, read from the changelogs in the image."""
    by_source: dict[str, tuple[str, str, str]] = {}
    for name, (old, new) in upgraded.items():
        by_source.setdefault(new["source"], (name, old["source_version"], new["source_version"]))
    if not by_source:
        return {}
    out: dict[str, dict[str, Any]] = {}
    with disk.scratch(workdir) as work, contextlib.ExitStack() as stack:
        root = disk.open_image(image_dir / artifact.IMAGE, "tonight", work, stack).root
        for source, (binary, old_version, new_version) in sorted(by_source.items()):
            path = changelog.find(root, binary, source)
            text = changelog.read(path) if path else None
            if text is None:
                out[source] = {"cves": [], "bugs": [], "security": False, "changelog": False}
                continue
            got = changelog.fixes(text, old_version, new_version)
            out[source] = {
                "cves": got.cves,
                "bugs": got.bugs,
                "security": got.security,
                "changelog": True,
            }
    return out


def render(name: str, drift: dict[str, Any]) -> str:
    """The drift report as plain text, for the CI log."""
    p = drift["packages"]
    lines = [f"{name}: {drift['old_digest'][:19]} -> {drift['new_digest'][:19]}"]
    for up in p["upgraded"]:
        mark = " [security]" if up.get("security") else ""
        cves = f" fixes {', '.join(up['cves'])}" if up.get("cves") else ""
        bugs = f" closes #{', #'.join(map(str, up['bugs']))}" if up.get("bugs") else ""
        lines.append(f"  ~ {up['name']} {up['old']} -> {up['new']}{mark}{cves}{bugs}")
    lines += [f"  + {a['name']} {a['version']}" for a in p["added"]]
    lines += [f"  - {r['name']} {r['version']}" for r in p["removed"]]
    files = drift["files"]
    if files:
        shown = ", ".join(f"{f['kind']} {f['path']}" for f in files[:10])
        more = drift["files_changed"] - min(len(files), 10)
        lines.append(f"  files: {shown}" + (f" and {more} more" if more > 0 else ""))
    for label, key, scale, unit in (("size", "size", 1e6, " MB"), ("boot", "boot_s", 1, " s")):
        d = drift[key]
        if d["delta"] is not None:
            pct = f" ({d['pct']:+.1f} %)" if d["pct"] is not None else ""
            lines.append(
                f"  {label}: {d['old'] / scale:.1f}{unit} -> {d['new'] / scale:.1f}{unit}{pct}"
            )
    lines += [f"  test {t['test']}: {t['old']} -> {t['new']}" for t in drift["tests"]]
    return "\n".join(lines)

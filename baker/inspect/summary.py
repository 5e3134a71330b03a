"""`baker inspect`: what an artifact is, in a few lines (or JSON for machines)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from baker import artifact
from baker.artifact import BOOT, BUILD, SBOM_CDX, VULNS
from baker.errors import InputError
from baker.evidence import vuln_report
from baker.evidence.verify import signer


def _load(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_bytes())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: not valid JSON ({e}).") from None
    return value if isinstance(value, dict) else {}


def summarize(directory: Path) -> dict[str, Any]:
    if not (directory / BUILD).exists():
        # Said as it always was here, rather than in read_record's words for the same thing.
        raise InputError(f"{directory}: no {BUILD} here; is this a baker artifact directory?")
    build = artifact.read_record(directory)
    boot = _load(directory / BOOT)
    cdx = _load(directory / SBOM_CDX)
    base = build.pins.base or {}
    tests = build.tests
    ami = build.image.ami or {}
    cloud = {}
    if ami:
        # An EC2 build's image is the AMI: named by its id, digested by its raw volume.
        cloud = {"image": f"ec2:{ami.get('region')}:{ami.get('image_id')}"}
        base_ami = build.pins.base_ami or {}
        base_text = f"AMI {base_ami.get('image_id')} ({base_ami.get('name') or 'unnamed'})"
    elif base.get("cloud_image"):
        vendor = base["cloud_image"]
        base_text = f"cloud image {vendor.get('source')} ({vendor.get('sha256')}, pinned)"
    else:
        base_text = f"debian {base.get('suite')}/{base.get('arch')}"
    lineage = []
    if build.parent is not None:
        # Up to the image made from packages, then what that was made from.
        parent = build.parent
        lineage = [f"{build.recipe.name} {build.image.digest}"] + [
            f"{a.name} {a.digest}" for a in [parent, *parent.ancestors]
        ]
        lineage.append(base_text)
        base_text = f"parent image {parent.name} {parent.digest}"
    return {
        "name": build.recipe.name,
        **cloud,
        "digest": build.image.digest or ami.get("raw_digest"),
        "recipe": build.recipe.file,
        "base": base_text,
        "base_digest": build.pins.base_digest,
        **({"lineage": lineage} if lineage else {}),
        "packages": len(cdx.get("components", [])) or len(build.pins.packages),
        "size_bytes": build.image.size,
        "virtual_size_bytes": build.image.virtual_size or ami.get("volume_size"),
        # Said only where it is not: a vendor's disk taken as it is.
        **(
            {"reproducible": False, "why_not_reproducible": build.image.why_not_reproducible}
            if build.image.reproducible is False
            else {}
        ),
        "vulnerabilities": _vulnerabilities(directory),
        "boot": {
            "accel": boot.get("accel"),
            "runs": boot.get("runs"),
            "median_time_to_ssh_s": boot.get("time_to_ssh_s"),
            "budget_s": boot.get("budget_s"),
        },
        "tests": {
            "passed": tests.tests - tests.failures - tests.errors - tests.skipped,
            "failed": tests.failures + tests.errors,
            "skipped": tests.skipped,
        },
        "signer": signer(directory),
        "built": build.finished,
        "baker_version": build.baker_version,
    }


def render(s: dict[str, Any]) -> str:
    boot = s["boot"]
    budget = f", budget {boot['budget_s']:g} s" if boot.get("budget_s") else ""
    size = (s["size_bytes"] or 0) / 1e6
    virtual = (s["virtual_size_bytes"] or 0) / 2**20
    lines = [
        f"{s['name']}",
        f"  digest    {s['digest']}",
        f"  recipe    {s['recipe']}",
        f"  base      {s['base']}, {s['packages']} packages",
        *([f"  lineage   {' ← '.join(s['lineage'])}"] if s.get("lineage") else []),
        (
            f"  image     {s['image']}, {virtual:.0f} MiB volume"
            if s.get("image")
            else f"  size      {size:.0f} MB qcow2, {virtual:.0f} MiB disk"
        ),
        *(
            [f"  rebuild   not reproducible ({s['why_not_reproducible']})"]
            if s.get("reproducible") is False
            else []
        ),
        f"  vulns     {_vulns_text(s.get('vulnerabilities'))}",
        f"  boot      median {boot['median_time_to_ssh_s']} s to SSH under {boot['accel']} "
        f"({boot['runs']} runs{budget})",
        f"  tests     {s['tests']['passed']} passed, {s['tests']['failed']} failed",
        f"  signer    {s['signer'] or 'unsigned'}",
        f"  built     {s['built']} by baker {s['baker_version']}",
    ]
    return "\n".join(lines)


def _vulnerabilities(directory: Path) -> dict[str, Any] | None:
    """The vulnerability report's counts: by severity, each split by fixability."""
    path = directory / VULNS
    if not path.is_file():
        return None
    summary = vuln_report.read_report(path.read_bytes())
    counts = {sev: by for sev, by in summary.counts.items() if any(by.values())}
    return {"db": summary.db_digest, "db_kind": summary.db_kind, "counts": counts}


def _vulns_text(v: dict[str, Any] | None) -> str:
    if v is None:
        return "not scanned"
    parts = [
        f"{by['fixable'] + by['no-fix']} {sev} ({by['fixable']} fixable)"
        for sev, by in v["counts"].items()
        if by["fixable"] or by["no-fix"]
    ]
    return f"{', '.join(parts) or 'none open'}, against {v['db'][:19]}… ({v['db_kind']})"

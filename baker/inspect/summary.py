"""`baker inspect`: what an artifact is, in a few lines (or JSON for machines)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from baker.errors import InputError
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
    build = _load(directory / "build.json")
    if not build:
        raise InputError(f"{directory}: no build.json here; is this a baker artifact directory?")
    boot = _load(directory / "boot.json")
    cdx = _load(directory / "sbom.cdx.json")
    base = build.get("pins", {}).get("base", {})
    tests = build.get("tests", {})
    image = build.get("image", {})
    return {
        "name": build.get("recipe", {}).get("name"),
        "digest": image.get("digest"),
        "recipe": build.get("recipe", {}).get("file"),
        "base": f"debian {base.get('suite')}/{base.get('arch')}",
        "base_digest": build.get("pins", {}).get("base_digest"),
        "packages": len(cdx.get("components", []))
        or len(build.get("pins", {}).get("packages", {})),
        "size_bytes": image.get("size"),
        "virtual_size_bytes": image.get("virtual_size"),
        "boot": {
            "accel": boot.get("accel"),
            "runs": boot.get("runs"),
            "median_time_to_ssh_s": boot.get("time_to_ssh_s"),
            "budget_s": boot.get("budget_s"),
        },
        "tests": {
            "passed": (
                tests.get("tests", 0)
                - tests.get("failures", 0)
                - tests.get("errors", 0)
                - tests.get("skipped", 0)
            ),
            "failed": tests.get("failures", 0) + tests.get("errors", 0),
            "skipped": tests.get("skipped", 0),
        },
        "signer": signer(directory),
        "built": build.get("finished"),
        "baker_version": build.get("baker_version"),
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
        f"  size      {size:.0f} MB qcow2, {virtual:.0f} MiB disk",
        f"  boot      median {boot['median_time_to_ssh_s']} s to SSH under {boot['accel']} "
        f"({boot['runs']} runs{budget})",
        f"  tests     {s['tests']['passed']} passed, {s['tests']['failed']} failed",
        f"  signer    {s['signer'] or 'unsigned'}",
        f"  built     {s['built']} by baker {s['baker_version']}",
    ]
    return "\n".join(lines)

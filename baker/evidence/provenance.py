"""Provenance: an in-toto Statement v1 whose predicate is SLSA provenance v1, saying what was
built, from which pinned inputs, by which builder, and when."""

from __future__ import annotations

from typing import Any

from baker import __version__
from baker.evidence.sbom import DISTRO, purl
from baker.image.packages import Package
from baker.recipe.spec import is_reference

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
BUILD_TYPE = "urn:baker:build-type:libvirt:v1"
BUILDER_ID = "urn:baker:builder:libvirt"


def _digest(value: str) -> dict[str, str]:
    algorithm, _, hexdigest = value.partition(":")
    return {algorithm: hexdigest}


def _package(p: Package, debs: dict[str, str], distro: str) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": p.name, "uri": purl(p, distro)}
    if p.name in debs:
        entry["digest"] = _digest(debs[p.name])  # the locked .deb's own hash
    return entry


def _where(source: str) -> str:
    """Where a parent image was fetched from: a registry reference, or a local directory."""
    return f"oci://{source}" if is_reference(source) else f"file:{source}"


def _base(pins: dict[str, Any], parent: dict[str, Any] | None) -> list[dict[str, Any]]:
    """What the build started from: a parent image baker baked (its tree read back), a
    vendor's cloud image (trusted by its pin: it has no signature), a Debian root tree made
    by mmdebstrap, or a cloud's base image."""
    vendor = (pins.get("base") or {}).get("cloud_image")
    if vendor:
        source = vendor["source"]
        return [
            {
                "name": "cloud-image",
                "uri": source if "://" in source else f"file:{source}",
                "digest": _digest(vendor["sha256"]),
                "annotations": {"trust": vendor["trust"], "treeDigest": pins.get("base_digest")},
            }
        ]
    if parent:
        return [
            {
                "name": "parent-image",
                "uri": _where(parent["source"]),
                "digest": _digest(parent["digest"]),
                "annotations": {
                    "name": parent["name"],
                    "provenanceDigest": parent["provenance_digest"],
                    "signer": parent["signer"],
                    "ancestors": parent.get("ancestors", []),
                    "treeDigest": pins.get("base_digest"),
                },
            }
        ]
    if pins.get("base"):
        entry: dict[str, Any] = {
            "name": "base-rootfs",
            "uri": f"mmdebstrap:{pins['base']['suite']}/{pins['base']['arch']}",
            "annotations": {"sources": pins["base"]["sources"]},
        }
        if pins.get("base_digest"):
            entry["digest"] = _digest(pins["base_digest"])
        return [entry]
    if pins.get("base_ami"):
        return [{"name": "base-image", "uri": "image:base", "annotations": pins["base_ami"]}]
    return []


def _byproducts(record: dict[str, Any]) -> dict[str, Any]:
    """The vulnerability report, by digest: the signed statement vouches for it too."""
    report = (record.get("scan") or {}).get("report")
    if not report:
        return {}
    return {"byproducts": [{"name": report["file"], "digest": _digest(report["digest"])}]}


def statement(
    *,
    image_file: str,
    digest: str | None = None,
    record: dict[str, Any],
    packages: list[Package],
    invocation_id: str,
    distro: str = DISTRO,
) -> dict[str, Any]:
    """The statement for one build, from its build record (build.json's content); its
    subject is `image_file` with `digest` (else the record's image digest)."""
    recipe = record["recipe"]
    pins = record["pins"]
    dependencies: list[dict[str, Any]] = [
        {"name": "recipe", "uri": f"file:{recipe['file']}", "digest": _digest(recipe["digest"])},
        *(
            {"name": rel, "uri": f"file:{rel}", "digest": _digest(digest)}
            for rel, digest in sorted(pins["files"].items())
        ),
        *_base(pins, record.get("parent")),
        *(_package(p, pins.get("debs", {}), distro) for p in packages),
    ]
    if scan := record.get("scan"):
        db = scan["db"]
        dependencies.append({"name": "vulnerability database", "uri": f"file:{db['file']}",
                             "digest": _digest(db["digest"])})  # fmt: skip
    if pins.get("lock"):
        dependencies.insert(
            1,
            {"name": "lock", "uri": f"file:{pins['lock']['file']}",
             "digest": _digest(pins["lock"]["digest"])},
        )  # fmt: skip
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": image_file, "digest": _digest(digest or record["image"]["digest"])}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {
                    "recipe": {
                        "name": recipe["name"],
                        "file": recipe["file"],
                        "digest": recipe["digest"],
                    },
                    "variables": record["variables"],
                    "accel": record.get("accel"),
                    # Where each build secret came from: the names, never the values.
                    **({"secrets": record["secrets"]} if record.get("secrets") else {}),
                },
                "internalParameters": {
                    "stepKeys": {n: s["key"] for n, s in record["steps"].items() if s.get("key")},
                    "sourceDateEpoch": record["source_date_epoch"],
                    "requestedPackages": (pins.get("base") or {}).get("packages", []),
                },
                "resolvedDependencies": dependencies,
            },
            "runDetails": {
                "builder": {"id": BUILDER_ID, "version": {"baker": __version__, **record["tools"]}},
                "metadata": {
                    "invocationId": invocation_id,
                    "startedOn": record["started"],
                    "finishedOn": record["finished"],
                },
                **_byproducts(record),
            },
        },
    }


def check(doc: Any) -> list[str]:
    """Structural check of a statement: the fields the in-toto and SLSA v1 schemas require."""
    problems: list[str] = []
    if not isinstance(doc, dict):
        return ["not a JSON object"]
    if doc.get("_type") != STATEMENT_TYPE:
        problems.append(f"_type is not {STATEMENT_TYPE}")
    if doc.get("predicateType") != PREDICATE_TYPE:
        problems.append(f"predicateType is not {PREDICATE_TYPE}")
    subjects = doc.get("subject")
    if not isinstance(subjects, list) or not subjects:
        problems.append("subject is missing or empty")
    else:
        for s in subjects:
            if not isinstance(s, dict) or not isinstance(s.get("digest"), dict) or not s["digest"]:
                problems.append("a subject has no digest")
    predicate = doc.get("predicate")
    if not isinstance(predicate, dict):
        return [*problems, "predicate is missing"]
    definition = predicate.get("buildDefinition")
    if not isinstance(definition, dict) or not isinstance(definition.get("buildType"), str):
        problems.append("predicate.buildDefinition.buildType is missing")
    elif not isinstance(definition.get("externalParameters"), dict):
        problems.append("predicate.buildDefinition.externalParameters is missing")
    run = predicate.get("runDetails")
    builder = run.get("builder") if isinstance(run, dict) else None
    if not isinstance(builder, dict) or not isinstance(builder.get("id"), str):
        problems.append("predicate.runDetails.builder.id is missing")
    return problems


def subject_digest(doc: Any, name: str) -> str | None:
    """'sha256:<hex>' of the subject called `name`, if any."""
    for s in doc.get("subject", []) if isinstance(doc, dict) else []:
        if isinstance(s, dict) and s.get("name") == name and "sha256" in s.get("digest", {}):
            return f"sha256:{s['digest']['sha256']}"
    return None

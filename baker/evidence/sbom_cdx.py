"""The CycloneDX 1.6 SBOM of an image: written, schema-checked, and read back (the image it
names, the debs it lists)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from functools import cache
from typing import Any

from cyclonedx.model import HashAlgorithm, HashType, Property
from cyclonedx.model.bom import Bom, BomMetaData
from cyclonedx.model.component import Component, ComponentType, Pedigree
from cyclonedx.model.license import DisjunctiveLicense, LicenseAcknowledgement
from cyclonedx.model.tool import ToolRepository
from cyclonedx.output.json import JsonV1Dot6
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from packageurl import PackageURL

from baker.errors import BuildError
from baker.evidence.licenses import spdx_id
from baker.evidence.sbom import Lineage, Subject, deb_arch, image_hex, purl, sort_packages
from baker.image.packages import Package

CDX_VERSION = "1.6"

PROP_ARCH = "baker:deb:architecture"
PROP_SOURCE = "baker:deb:source"
PROP_SOURCE_VERSION = "baker:deb:source-version"
PROP_IMAGE_FILE = "baker:image:file"
# A child image's package: "parent" if its parent image had it so, "added" if the child
# installed or changed it.
PROP_LAYER = "baker:layer"

# uuid5 needs a namespace of its own so our serial numbers cannot collide with other tools'.
_SERIAL_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://baker.invalid/cyclonedx")


def document(subject: Subject) -> bytes:
    """CycloneDX 1.6 JSON of the image and its packages, schema-validated before it is returned."""
    image_name, image_file, image_digest = (
        subject.image_name, subject.image_file, subject.image_digest,
    )  # fmt: skip
    licenses, tool_version = subject.licenses, subject.tool_version
    hexdigest = image_hex(image_digest)
    image = Component(
        # "file", not "operating-system": the hash is of image.qcow2's bytes, and that file is
        # what provenance and signatures name too.
        type=ComponentType.FILE,
        name=image_name,
        version=hexdigest,
        bom_ref=f"image:{image_name}@{image_digest}",
        hashes=[HashType(alg=HashAlgorithm.SHA_256, content=hexdigest)],
        properties=[Property(name=PROP_IMAGE_FILE, value=image_file)],
        pedigree=_pedigree(subject),
    )
    components = [
        _component(p, licenses.get(p.name, []), subject.distro, subject.parent)
        for p in sort_packages(subject.packages)
    ]
    baker = Component(
        type=ComponentType.APPLICATION,
        name="baker",
        version=tool_version,
        bom_ref=f"tool:baker@{tool_version}",
    )
    bom = Bom(
        serial_number=uuid.uuid5(_SERIAL_NAMESPACE, image_digest),
        metadata=BomMetaData(
            component=image,
            tools=ToolRepository(components=[baker]),
            timestamp=datetime.fromtimestamp(subject.source_date_epoch, tz=UTC),
        ),
        components=components,
    )
    bom.register_dependency(image, components)
    doc = json.loads(JsonV1Dot6(bom).output_as_string())
    # The library gives every component an empty dependency entry, which in CycloneDX 1.6
    # asserts "has no dependencies"; a deb's dependencies are unknown here, so drop those.
    doc["dependencies"] = [d for d in doc.get("dependencies", []) if d.get("dependsOn")]
    data = (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()
    errors = validate(data)
    if errors:
        raise BuildError(f"generated CycloneDX SBOM is invalid: {'; '.join(errors)}")
    return data


def _pedigree(subject: Subject) -> Pedigree | None:
    """A child image's ancestor: its parent image, by name and digest."""
    parent = subject.parent
    if parent is None:
        return None
    hexdigest = image_hex(parent.digest)
    ancestor = Component(
        type=ComponentType.FILE,
        name=parent.name,
        version=hexdigest,
        bom_ref=f"image:{parent.name}@{parent.digest}",
        hashes=[HashType(alg=HashAlgorithm.SHA_256, content=hexdigest)],
    )
    return Pedigree(ancestors=[ancestor])


def _component(p: Package, names: list[str], distro: str, parent: Lineage | None) -> Component:
    ref = purl(p, distro)
    # "declared": read from the package's own copyright file, not concluded by any analysis.
    declared = LicenseAcknowledgement.DECLARED
    licences = []
    for name in sorted(set(names)):
        known = spdx_id(name)
        licences.append(
            DisjunctiveLicense(id=known, acknowledgement=declared)
            if known
            else DisjunctiveLicense(name=name, acknowledgement=declared)
        )
    return Component(
        type=ComponentType.LIBRARY,
        name=p.name,
        version=p.version,
        purl=PackageURL.from_string(ref),
        bom_ref=ref,
        licenses=licences,
        properties=[
            Property(name=PROP_ARCH, value=p.architecture),
            Property(name=PROP_SOURCE, value=p.source),
            Property(name=PROP_SOURCE_VERSION, value=p.source_version),
            *(
                [Property(name=PROP_LAYER, value="parent" if parent.inherited(p) else "added")]
                if parent
                else []
            ),
        ],
    )


def validate(data: bytes) -> list[str]:
    """[] when `data` is CycloneDX 1.6 JSON that passes the strict schema; messages otherwise."""
    doc, errors = _load_json(data)
    if errors:
        return errors
    # The 1.6 schema accepts any specVersion string, so a document claiming another version
    # would pass it; we publish 1.6 and check that we do.
    if isinstance(doc, dict) and doc.get("specVersion", CDX_VERSION) != CDX_VERSION:
        errors.append(f"specVersion is {doc.get('specVersion')!r}, expected {CDX_VERSION!r}")
    found = _validator().validate_str(data.decode(), all_errors=True)
    for error in found or ():
        e = error.data  # a jsonschema ValidationError; its str() dumps the whole schema
        where = "/".join(str(part) for part in e.absolute_path) or "(document)"
        errors.append(f"{where}: {e.message}")
    return errors


@cache
def _validator() -> JsonStrictValidator:
    # Loading and compiling the schema dominates a validation; do it once per process.
    return JsonStrictValidator(SchemaVersion.V1_6)


def _load_json(data: bytes) -> tuple[Any, list[str]]:
    try:
        return json.loads(data.decode()), []
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        return None, [f"not JSON: {e}"]


def subject(doc: dict[str, Any]) -> str | None:
    """'sha256:<hex>' of metadata.component (the image), None if absent."""
    component = (doc.get("metadata") or {}).get("component") or {}
    for h in component.get("hashes") or []:
        if h.get("alg") == "SHA-256" and h.get("content"):
            return f"sha256:{h['content']}"
    return None


def packages_in(doc: dict[str, Any]) -> set[tuple[str, str, str]]:
    """(name, version, arch) of every component with a deb purl."""
    out: set[tuple[str, str, str]] = set()
    for c in doc.get("components") or []:
        arch = deb_arch(c.get("purl"))
        if arch is not None:
            out.add((c.get("name", ""), c.get("version", ""), arch))
    return out


def debs(doc: dict[str, Any]) -> list[Package]:
    """Every component's package as the SBOM records it (name, version, and the architecture,
    source package and source version baker adds as properties), in the document's order."""
    out = []
    for c in doc.get("components") or []:
        name, version = c.get("name"), c.get("version")
        if not (isinstance(name, str) and name and isinstance(version, str) and version):
            continue
        props = {p.get("name"): p.get("value") for p in c.get("properties") or []}
        out.append(Package(name, version, props.get(PROP_ARCH) or "",
                           props.get(PROP_SOURCE) or name,
                           props.get(PROP_SOURCE_VERSION) or version))  # fmt: skip
    return out

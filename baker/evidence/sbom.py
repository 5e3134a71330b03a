"""CycloneDX 1.6 and SPDX 2.3 SBOMs of the packages in an image, and the checks run on them.

Both documents are byte-identical for identical inputs: every identifier that the libraries would
otherwise draw at random or from the clock is derived from the image digest and SOURCE_DATE_EPOCH.
"""

from __future__ import annotations

import io
import json
import re
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from functools import cache
from typing import Any
from urllib.parse import quote

from cyclonedx.model import HashAlgorithm, HashType, Property
from cyclonedx.model.bom import Bom, BomMetaData
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.model.license import DisjunctiveLicense, LicenseAcknowledgement
from cyclonedx.model.tool import ToolRepository
from cyclonedx.output.json import JsonV1Dot6
from cyclonedx.schema import SchemaVersion
from cyclonedx.spdx import fixup_id
from cyclonedx.validation.json import JsonStrictValidator
from license_expression import LicenseSymbol
from packageurl import PackageURL
from spdx_tools.common.spdx_licensing import spdx_licensing
from spdx_tools.spdx.model import (
    Actor,
    ActorType,
    Checksum,
    ChecksumAlgorithm,
    CreationInfo,
    Document,
    ExternalPackageRef,
    ExternalPackageRefCategory,
    PackagePurpose,
    Relationship,
    RelationshipType,
    SpdxNoAssertion,
)
from spdx_tools.spdx.model import Package as SpdxPackage
from spdx_tools.spdx.parser.error import SPDXParsingError
from spdx_tools.spdx.parser.json.json_parser import remove_json_control_chars_hook
from spdx_tools.spdx.parser.jsonlikedict.json_like_dict_parser import JsonLikeDictParser
from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document
from spdx_tools.spdx.writer.json.json_writer import write_document_to_stream

from baker.errors import BuildError
from baker.image.packages import Package

# Every image baker builds is Debian 12; the purl qualifier lets scanners pick the right
# vulnerability feed without a separate operating-system component.
DISTRO = "debian-12"
CDX_VERSION = "1.6"
SPDX_VERSION = "SPDX-2.3"

PROP_ARCH = "baker:deb:architecture"
PROP_SOURCE = "baker:deb:source"
PROP_SOURCE_VERSION = "baker:deb:source-version"
PROP_IMAGE_FILE = "baker:image:file"

# uuid5 needs a namespace of its own so our serial numbers cannot collide with other tools'.
_SERIAL_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://baker.invalid/cyclonedx")
_DIGEST = re.compile(r"sha256:([0-9a-f]{64})")
_SPDX_ID_SAFE = re.compile(r"[a-z0-9.-]")


# -- Debian copyright files ------------------------------------------------------------------


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


def _spdx_id(name: str) -> str | None:
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


# -- identifiers -----------------------------------------------------------------------------


def purl(p: Package) -> str:
    return PackageURL(
        type="deb",
        namespace="debian",
        name=p.name,
        version=p.version,
        qualifiers={"arch": p.architecture, "distro": DISTRO},
    ).to_string()


def _hex(image_digest: str) -> str:
    m = _DIGEST.fullmatch(image_digest)
    if not m:
        raise BuildError(f"image digest {image_digest!r} is not 'sha256:<64 hex digits>'")
    return m.group(1)


def _spdx_ref_part(s: str) -> str:
    # Debian names are lower-case, so an upper-case escape can never collide with a real name.
    return "".join(c if _SPDX_ID_SAFE.fullmatch(c) else f"X{ord(c):X}X" for c in s)


def _spdx_package_id(p: Package) -> str:
    # "-Arch-" cannot occur inside an escaped part (it would need a lower-case "rch"
    # right after an upper-case "A" that follows "-"), so name and arch stay separable.
    return f"SPDXRef-Deb-{_spdx_ref_part(p.name)}-Arch-{_spdx_ref_part(p.architecture)}"


def _sorted(packages: Iterable[Package]) -> list[Package]:
    # dpkg's status order is not ours to rely on; output bytes must not depend on it.
    return sorted(packages, key=lambda p: (p.name, p.architecture, p.version))


# -- CycloneDX -------------------------------------------------------------------------------


def cyclonedx(
    *,
    image_name: str,
    image_file: str,
    image_digest: str,
    packages: list[Package],
    licenses: dict[str, list[str]],
    source_date_epoch: int,
    tool_version: str,
) -> bytes:
    """CycloneDX 1.6 JSON of the image and its packages, schema-validated before it is returned.

    `licenses` maps a binary package name to its DEP-5 licence short names.
    """
    hexdigest = _hex(image_digest)
    image = Component(
        # "file", not "operating-system": the hash is of image.qcow2's bytes, and that file is
        # what provenance and signatures name too.
        type=ComponentType.FILE,
        name=image_name,
        version=hexdigest,
        bom_ref=f"image:{image_name}@{image_digest}",
        hashes=[HashType(alg=HashAlgorithm.SHA_256, content=hexdigest)],
        properties=[Property(name=PROP_IMAGE_FILE, value=image_file)],
    )
    components = [_cdx_component(p, licenses.get(p.name, [])) for p in _sorted(packages)]
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
            timestamp=datetime.fromtimestamp(source_date_epoch, tz=UTC),
        ),
        components=components,
    )
    bom.register_dependency(image, components)
    doc = json.loads(JsonV1Dot6(bom).output_as_string())
    # The library gives every component an empty dependency entry, which in CycloneDX 1.6
    # asserts "has no dependencies"; a deb's dependencies are unknown here, so drop those.
    doc["dependencies"] = [d for d in doc.get("dependencies", []) if d.get("dependsOn")]
    data = (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()
    errors = validate_cyclonedx(data)
    if errors:
        raise BuildError(f"generated CycloneDX SBOM is invalid: {'; '.join(errors)}")
    return data


def _cdx_component(p: Package, names: list[str]) -> Component:
    ref = purl(p)
    # "declared": read from the package's own copyright file, not concluded by any analysis.
    declared = LicenseAcknowledgement.DECLARED
    licences = []
    for name in sorted(set(names)):
        spdx_id = _spdx_id(name)
        licences.append(
            DisjunctiveLicense(id=spdx_id, acknowledgement=declared)
            if spdx_id
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
        ],
    )


def validate_cyclonedx(data: bytes) -> list[str]:
    """[] when `data` is CycloneDX 1.6 JSON that passes the strict schema; messages otherwise."""
    doc, errors = _load_json(data)
    if errors:
        return errors
    # The 1.6 schema accepts any specVersion string, so a document claiming another version
    # would pass it; we publish 1.6 and check that we do.
    if isinstance(doc, dict) and doc.get("specVersion", CDX_VERSION) != CDX_VERSION:
        errors.append(f"specVersion is {doc.get('specVersion')!r}, expected {CDX_VERSION!r}")
    found = _cdx_validator().validate_str(data.decode(), all_errors=True)
    for error in found or ():
        e = error.data  # a jsonschema ValidationError; its str() dumps the whole schema
        where = "/".join(str(part) for part in e.absolute_path) or "(document)"
        errors.append(f"{where}: {e.message}")
    return errors


@cache
def _cdx_validator() -> JsonStrictValidator:
    # Loading and compiling the schema dominates a validation; do it once per process.
    return JsonStrictValidator(SchemaVersion.V1_6)


def cyclonedx_subject(doc: dict[str, Any]) -> str | None:
    """'sha256:<hex>' of metadata.component (the image), None if absent."""
    component = (doc.get("metadata") or {}).get("component") or {}
    for h in component.get("hashes") or []:
        if h.get("alg") == "SHA-256" and h.get("content"):
            return f"sha256:{h['content']}"
    return None


def cyclonedx_packages(doc: dict[str, Any]) -> set[tuple[str, str, str]]:
    """(name, version, arch) of every component with a deb purl."""
    out: set[tuple[str, str, str]] = set()
    for c in doc.get("components") or []:
        arch = _deb_arch(c.get("purl"))
        if arch is not None:
            out.add((c.get("name", ""), c.get("version", ""), arch))
    return out


def _deb_arch(ref: object) -> str | None:
    """The arch qualifier of a deb purl; None if `ref` is no deb purl."""
    if not isinstance(ref, str) or not ref.startswith("pkg:deb/"):
        return None
    try:
        parsed = PackageURL.from_string(ref)
    except ValueError:
        return None
    qualifiers = parsed.qualifiers if isinstance(parsed.qualifiers, dict) else {}
    return qualifiers.get("arch", "")


# -- SPDX ------------------------------------------------------------------------------------


def spdx(
    *,
    image_name: str,
    image_file: str,
    image_digest: str,
    packages: list[Package],
    licenses: dict[str, list[str]],
    source_date_epoch: int,
    tool_version: str,
) -> bytes:
    """SPDX 2.3 JSON of the image and its packages, validated before it is returned.

    `licenses` maps a binary package name to its DEP-5 licence short names.
    """
    hexdigest = _hex(image_digest)
    image_id = "SPDXRef-Image"
    image = SpdxPackage(
        spdx_id=image_id,
        name=image_name,
        download_location=SpdxNoAssertion(),
        version=hexdigest,
        file_name=image_file,
        supplier=SpdxNoAssertion(),
        files_analyzed=False,
        checksums=[Checksum(ChecksumAlgorithm.SHA256, hexdigest)],
        primary_package_purpose=PackagePurpose.FILE,  # same reasoning as the CycloneDX type
    )
    debs = [_spdx_package(p, licenses.get(p.name, [])) for p in _sorted(packages)]
    relationships = [Relationship("SPDXRef-DOCUMENT", RelationshipType.DESCRIBES, image_id)]
    relationships += [Relationship(image_id, RelationshipType.CONTAINS, d.spdx_id) for d in debs]
    document = Document(
        creation_info=CreationInfo(
            spdx_version=SPDX_VERSION,
            spdx_id="SPDXRef-DOCUMENT",
            name=image_name,
            document_namespace=(
                f"https://baker.invalid/spdx/{quote(image_name, safe='')}/{hexdigest}"
            ),
            creators=[Actor(ActorType.TOOL, f"baker-{tool_version}")],
            created=datetime.fromtimestamp(source_date_epoch, tz=UTC),
        ),
        packages=[image, *debs],
        relationships=relationships,
    )
    messages = validate_full_spdx_document(document, SPDX_VERSION)
    if messages:
        raise BuildError(
            "generated SPDX SBOM is invalid: " + "; ".join(m.validation_message for m in messages)
        )
    out = io.StringIO()
    # Already validated above, with the messages turned into a BuildError.
    write_document_to_stream(document, out, validate=False)
    return (out.getvalue() + "\n").encode()


def _spdx_package(p: Package, names: list[str]) -> SpdxPackage:
    names = sorted(set(names))
    ids = [_spdx_id(n) for n in names]
    declared: Any = SpdxNoAssertion()
    comment = None
    if names and all(ids):
        # DEP-5 lists the licences of different files: the package as a whole carries all.
        declared = spdx_licensing.parse(" AND ".join(sorted({i for i in ids if i})))
    elif names:
        comment = "Debian copyright file declares: " + ", ".join(names)
    return SpdxPackage(
        spdx_id=_spdx_package_id(p),
        name=p.name,
        download_location=SpdxNoAssertion(),
        version=p.version,
        supplier=SpdxNoAssertion(),
        files_analyzed=False,
        source_info=f"built from Debian source package {p.source} {p.source_version}",
        license_declared=declared,
        license_comment=comment,
        external_references=[
            ExternalPackageRef(ExternalPackageRefCategory.PACKAGE_MANAGER, "purl", purl(p))
        ],
        primary_package_purpose=PackagePurpose.LIBRARY,
    )


def validate_spdx(data: bytes) -> list[str]:
    """[] when `data` is a valid SPDX 2.3 JSON document; messages otherwise."""
    try:
        raw = json.loads(data.decode(), object_pairs_hook=remove_json_control_chars_hook)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        return [f"not JSON: {e}"]
    if not isinstance(raw, dict):
        return [f"not an SPDX document: top level is a JSON {type(raw).__name__}"]
    try:
        # What spdx-tools' JSON file parser does after json.load, without a temporary file.
        document = JsonLikeDictParser().parse(raw)
    except SPDXParsingError as e:
        return e.get_messages()
    except Exception as e:
        # The parser lets assorted errors escape on structurally odd input (a string where a
        # list belongs, ...); a validator must report them rather than crash.
        return [f"cannot parse SPDX document: {type(e).__name__}: {e}"]
    return [m.validation_message for m in validate_full_spdx_document(document, SPDX_VERSION)]


def _described_ids(doc: dict[str, Any]) -> list[str]:
    # Writers may put DESCRIBES in documentDescribes or in relationships; both are SPDX 2.3 JSON.
    doc_id = doc.get("SPDXID", "SPDXRef-DOCUMENT")
    ids = list(doc.get("documentDescribes") or [])
    for r in doc.get("relationships") or []:
        if r.get("relationshipType") == "DESCRIBES" and r.get("spdxElementId") == doc_id:
            ids.append(r.get("relatedSpdxElement"))
        elif r.get("relationshipType") == "DESCRIBED_BY" and r.get("relatedSpdxElement") == doc_id:
            ids.append(r.get("spdxElementId"))
    return ids


def spdx_subject(doc: dict[str, Any]) -> str | None:
    """'sha256:<hex>' of the package the document describes, None if absent."""
    packages = {p.get("SPDXID"): p for p in doc.get("packages") or []}
    for spdx_id in _described_ids(doc):
        for c in (packages.get(spdx_id) or {}).get("checksums") or []:
            if c.get("algorithm") == "SHA256" and c.get("checksumValue"):
                return f"sha256:{c['checksumValue']}"
    return None


def spdx_packages(doc: dict[str, Any]) -> set[tuple[str, str, str]]:
    """(name, version, arch) of every package with a deb purl external reference."""
    out: set[tuple[str, str, str]] = set()
    for p in doc.get("packages") or []:
        for ref in p.get("externalRefs") or []:
            if ref.get("referenceType") != "purl":
                continue
            arch = _deb_arch(ref.get("referenceLocator"))
            if arch is not None:
                out.add((p.get("name", ""), p.get("versionInfo", ""), arch))
    return out


def _load_json(data: bytes) -> tuple[Any, list[str]]:
    try:
        return json.loads(data.decode()), []
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        return None, [f"not JSON: {e}"]

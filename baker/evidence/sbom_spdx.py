"""The SPDX 2.3 SBOM of an image: written, validated, and read back (the package it describes,
the debs it lists)."""

from __future__ import annotations

import io
import json
import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from spdx_tools.common.spdx_licensing import spdx_licensing
from spdx_tools.spdx.model.actor import Actor, ActorType
from spdx_tools.spdx.model.checksum import Checksum, ChecksumAlgorithm
from spdx_tools.spdx.model.document import CreationInfo, Document
from spdx_tools.spdx.model.package import (
    ExternalPackageRef,
    ExternalPackageRefCategory,
    PackagePurpose,
)
from spdx_tools.spdx.model.package import Package as SpdxPackage
from spdx_tools.spdx.model.relationship import Relationship, RelationshipType
from spdx_tools.spdx.model.spdx_no_assertion import SpdxNoAssertion
from spdx_tools.spdx.parser.error import SPDXParsingError
from spdx_tools.spdx.parser.json.json_parser import remove_json_control_chars_hook
from spdx_tools.spdx.parser.jsonlikedict.json_like_dict_parser import JsonLikeDictParser
from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document
from spdx_tools.spdx.writer.json.json_writer import write_document_to_stream

from baker.errors import BuildError
from baker.evidence.licenses import spdx_id
from baker.evidence.sbom import Lineage, Subject, deb_arch, image_hex, purl, sort_packages
from baker.image.packages import Package

SPDX_VERSION = "SPDX-2.3"

_SPDX_ID_SAFE = re.compile(r"[a-z0-9.-]")


def document(subject: Subject) -> bytes:
    """SPDX 2.3 JSON of the image and its packages, validated before it is returned."""
    image_name, image_file, image_digest = (
        subject.image_name, subject.image_file, subject.image_digest,
    )  # fmt: skip
    licenses, tool_version = subject.licenses, subject.tool_version
    hexdigest = image_hex(image_digest)
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
    debs = [
        _package(p, licenses.get(p.name, []), subject.distro)
        for p in sort_packages(subject.packages)
    ]
    relationships = [Relationship("SPDXRef-DOCUMENT", RelationshipType.DESCRIBES, image_id)]
    relationships += [Relationship(image_id, RelationshipType.CONTAINS, d.spdx_id) for d in debs]
    packages = [image, *debs]
    if subject.parent is not None:
        # A child image: it descends from its parent image, which contains the packages the
        # child has as the parent had them; the rest the child added.
        parent = _parent(subject.parent)
        packages.append(parent)
        relationships.append(Relationship(image_id, RelationshipType.DESCENDANT_OF, parent.spdx_id))
        relationships += [
            Relationship(parent.spdx_id, RelationshipType.CONTAINS, _package_id(p))
            for p in sort_packages(subject.packages)
            if subject.parent.inherited(p)
        ]
    doc = Document(
        creation_info=CreationInfo(
            spdx_version=SPDX_VERSION,
            spdx_id="SPDXRef-DOCUMENT",
            name=image_name,
            document_namespace=(
                f"https://baker.invalid/spdx/{quote(image_name, safe='')}/{hexdigest}"
            ),
            creators=[Actor(ActorType.TOOL, f"baker-{tool_version}")],
            created=datetime.fromtimestamp(subject.source_date_epoch, tz=UTC),
        ),
        packages=packages,
        relationships=relationships,
    )
    messages = validate_full_spdx_document(doc, SPDX_VERSION)
    if messages:
        raise BuildError(
            "generated SPDX SBOM is invalid: " + "; ".join(m.validation_message for m in messages)
        )
    out = io.StringIO()
    # Already validated above, with the messages turned into a BuildError.
    write_document_to_stream(doc, out, validate=False)
    return (out.getvalue() + "\n").encode()


def _parent(parent: Lineage) -> SpdxPackage:
    hexdigest = image_hex(parent.digest)
    return SpdxPackage(
        spdx_id="SPDXRef-ParentImage",
        name=parent.name,
        download_location=SpdxNoAssertion(),
        version=hexdigest,
        supplier=SpdxNoAssertion(),
        files_analyzed=False,
        checksums=[Checksum(ChecksumAlgorithm.SHA256, hexdigest)],
        primary_package_purpose=PackagePurpose.FILE,
    )


def _ref_part(s: str) -> str:
    # Debian names are lower-case, so an upper-case escape can never collide with a real name.
    return "".join(c if _SPDX_ID_SAFE.fullmatch(c) else f"X{ord(c):X}X" for c in s)


def _package_id(p: Package) -> str:
    # "-Arch-" cannot occur inside an escaped part (it would need a lower-case "rch"
    # right after an upper-case "A" that follows "-"), so name and arch stay separable.
    return f"SPDXRef-Deb-{_ref_part(p.name)}-Arch-{_ref_part(p.architecture)}"


def _package(p: Package, names: list[str], distro: str) -> SpdxPackage:
    names = sorted(set(names))
    ids = [spdx_id(n) for n in names]
    declared: Any = SpdxNoAssertion()
    comment = None
    if names and all(ids):
        # DEP-5 lists the licences of different files: the package as a whole carries all.
        declared = spdx_licensing.parse(" AND ".join(sorted({i for i in ids if i})))
    elif names:
        comment = "Debian copyright file declares: " + ", ".join(names)
    return SpdxPackage(
        spdx_id=_package_id(p),
        name=p.name,
        download_location=SpdxNoAssertion(),
        version=p.version,
        supplier=SpdxNoAssertion(),
        files_analyzed=False,
        source_info=f"built from Debian source package {p.source} {p.source_version}",
        license_declared=declared,
        license_comment=comment,
        external_references=[
            ExternalPackageRef(ExternalPackageRefCategory.PACKAGE_MANAGER, "purl", purl(p, distro))
        ],
        primary_package_purpose=PackagePurpose.LIBRARY,
    )


def validate(data: bytes) -> list[str]:
    """[] when `data` is a valid SPDX 2.3 JSON document; messages otherwise."""
    try:
        raw = json.loads(data.decode(), object_pairs_hook=remove_json_control_chars_hook)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        return [f"not JSON: {e}"]
    if not isinstance(raw, dict):
        return [f"not an SPDX document: top level is a JSON {type(raw).__name__}"]
    try:
        # What spdx-tools' JSON file parser does after json.load, without a temporary file.
        # The parser's constructor carries no annotations.
        parsed = JsonLikeDictParser().parse(raw)  # type: ignore[no-untyped-call]
    except SPDXParsingError as e:
        return list(e.messages)
    except Exception as e:
        # The parser lets assorted errors escape on structurally odd input (a string where a
        # list belongs, ...); a validator must report them rather than crash.
        return [f"cannot parse SPDX document: {type(e).__name__}: {e}"]
    return [m.validation_message for m in validate_full_spdx_document(parsed, SPDX_VERSION)]


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


def subject(doc: dict[str, Any]) -> str | None:
    """'sha256:<hex>' of the package the document describes, None if absent."""
    packages = {p.get("SPDXID"): p for p in doc.get("packages") or []}
    for described in _described_ids(doc):
        for c in (packages.get(described) or {}).get("checksums") or []:
            if c.get("algorithm") == "SHA256" and c.get("checksumValue"):
                return f"sha256:{c['checksumValue']}"
    return None


def packages_in(doc: dict[str, Any]) -> set[tuple[str, str, str]]:
    """(name, version, arch) of every package with a deb purl external reference."""
    out: set[tuple[str, str, str]] = set()
    for p in doc.get("packages") or []:
        for ref in p.get("externalRefs") or []:
            if ref.get("referenceType") != "purl":
                continue
            arch = deb_arch(ref.get("referenceLocator"))
            if arch is not None:
                out.add((p.get("name", ""), p.get("versionInfo", ""), arch))
    return out

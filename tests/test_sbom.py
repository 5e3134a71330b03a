"""SBOM generation (baker.evidence.sbom, sbom_cdx, sbom_spdx, licenses): fast, no VM."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from baker.errors import BuildError
from baker.evidence import licenses, sbom, sbom_cdx, sbom_spdx
from baker.image.packages import Package

DIGEST = "sha256:" + "3f" * 32
OTHER_DIGEST = "sha256:" + "a0" * 32
EPOCH = 1_700_000_000

PACKAGES = [
    # epoch, '+' in the version, source differs from the binary
    Package("bsdutils", "1:2.38.1-5+deb12u3", "amd64", "util-linux", "2.38.1-5+deb12u3"),
    Package("libc6", "2.36-9+deb12u10", "amd64", "glibc", "2.36-9+deb12u10"),
    # multiarch: same name, another architecture
    Package("libc6", "2.36-9+deb12u10", "i386", "glibc", "2.36-9+deb12u10"),
    # '+' in the name, source version differs from the binary version
    Package("libstdc++6", "12.2.0-14+deb12u1", "amd64", "gcc-12", "12.2.0-14+deb12u1"),
    Package("tzdata", "2025b-0+deb12u1", "all", "tzdata", "2025b-0+deb12u1"),
    Package("util-linux", "2.38.1-5+deb12u3", "amd64", "util-linux", "2.38.1-5+deb12u3"),
    Package("zlib1g", "1:1.2.13.dfsg-1", "amd64", "zlib", "1:1.2.13.dfsg-1"),
]

LICENSES = {
    "libc6": ["GPL-2+", "LGPL-2.1+"],  # GPL-2+ is Debian's name, not an SPDX id
    "util-linux": ["GPL-2.0-only", "MIT"],
    "zlib1g": ["Zlib"],
    "tzdata": ["public-domain"],
    # bsdutils and libstdc++6: no machine-readable copyright file
}

DEP5 = """\
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: util-linux
Upstream-Contact: util-linux@vger.kernel.org
Source: https://www.kernel.org/pub/linux/utils/util-linux/
License: GPL-2+

Files: *
Copyright: 1991-2023 Karel Zak <kzak@redhat.com> and others
License: GPL-2+

Files: lib/randutils.c
  lib/md5.c
Copyright: 2008 Google Inc.
License: BSD-3-clause

Files: libuuid/*
Copyright: 1996-1999 Theodore Ts'o
license: bsd-3-clause

Files: sys-utils/flock.c
Copyright: 2003-2005 H. Peter Anvin
License: MIT
 Permission is hereby granted, free of charge, to any person obtaining a copy
 License: this-is-licence-text-not-a-field
 .
 THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND.

Files: libblkid/*
Copyright: 2007-2012 Red Hat, Inc.
License:   LGPL-2.1+  or   GPL-2+

License: BSD-3-clause
 Redistribution and use in source and binary forms, with or without
 modification, are permitted provided that the following conditions are met:

License: Artistic
 This stand-alone paragraph's licence is used by no Files paragraph.
"""

NOT_DEP5 = """\
This is Debian GNU/Linux's prepackaged version of the FSF's GNU Bash,
the Bourne Again SHell.

This package was put together by Matthias Klose <doko@debian.org>.
License: GPL-3+ (this line only looks like a field)

Copyright (C) 1987-2022 Free Software Foundation, Inc.

Bash is free software; you can redistribute it and/or modify it under
the terms of the GNU General Public License as published by the Free
Software Foundation; either version 3, or (at your option) any later
version.

On Debian systems, the complete text of the GNU General Public License
can be found in `/usr/share/common-licenses/GPL-3'.
"""


def build(fn: Callable[[sbom.Subject], bytes], **overrides: Any) -> bytes:
    kwargs: dict[str, Any] = {
        "image_name": "debian-12-base",
        "image_file": "image.qcow2",
        "image_digest": DIGEST,
        "packages": PACKAGES,
        "licenses": LICENSES,
        "source_date_epoch": EPOCH,
        "tool_version": "0.1.0",
    }
    kwargs.update(overrides)
    return fn(sbom.Subject(**kwargs))


@pytest.fixture(scope="module")
def cdx() -> bytes:
    return build(sbom_cdx.document)


@pytest.fixture(scope="module")
def spdx() -> bytes:
    return build(sbom_spdx.document)


def cdx_by_purl(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["purl"]: c for c in doc["components"]}


def spdx_by_purl(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        r["referenceLocator"]: p
        for p in doc["packages"]
        for r in p.get("externalRefs", [])
        if r["referenceType"] == "purl"
    }


def by_key(name: str, arch: str) -> Package:
    return next(p for p in PACKAGES if p.name == name and p.architecture == arch)


def named(name: str, arch: str = "amd64") -> str:
    return sbom.purl(by_key(name, arch))


# -- copyright files ---------------------------------------------------------------------


def test_licenses_from_dep5_copyright() -> None:
    assert licenses.licenses_from_copyright(DEP5) == [
        "BSD-3-clause",
        "GPL-2+",
        "LGPL-2.1+ or GPL-2+",
        "MIT",
        "bsd-3-clause",
    ]


def test_licenses_from_non_dep5_copyright() -> None:
    assert licenses.licenses_from_copyright(NOT_DEP5) == []
    assert licenses.licenses_from_copyright("") == []
    header_only = "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n"
    assert licenses.licenses_from_copyright(header_only) == []


# -- purl ----------------------------------------------------------------------------------


def test_purl_format() -> None:
    # packageurl-python leaves ':' unencoded, as the current purl spec requires; '+' -> %2B.
    assert (
        sbom.purl(by_key("bsdutils", "amd64"))
        == "pkg:deb/debian/bsdutils@1:2.38.1-5%2Bdeb12u3?arch=amd64&distro=debian-12"
    )
    assert (
        sbom.purl(by_key("libstdc++6", "amd64"))
        == "pkg:deb/debian/libstdc%2B%2B6@12.2.0-14%2Bdeb12u1?arch=amd64&distro=debian-12"
    )
    assert (
        sbom.purl(by_key("tzdata", "all"))
        == "pkg:deb/debian/tzdata@2025b-0%2Bdeb12u1?arch=all&distro=debian-12"
    )


def test_an_ubuntu_suites_purls_are_ubuntus() -> None:
    """A build on Ubuntu's cloud image: its packages are pkg:deb/ubuntu, distro=ubuntu-24.04,
    as purl's deb type and Ubuntu's scanners name them."""
    from baker.image import debian
    from baker.recipe.spec import Base

    noble = Base(suite="noble", image="https://cloud-images.ubuntu.com/noble.img", sha256="a" * 64)
    assert (debian.distro(noble), debian.family(noble)) == ("ubuntu-24.04", "ubuntu")
    assert debian.family(Base()) == "debian"
    assert (
        sbom.purl(by_key("bsdutils", "amd64"), debian.distro(noble))
        == "pkg:deb/ubuntu/bsdutils@1:2.38.1-5%2Bdeb12u3?arch=amd64&distro=ubuntu-24.04"
    )


# -- CycloneDX -----------------------------------------------------------------------------


def test_cyclonedx_is_valid(cdx: bytes) -> None:
    assert sbom_cdx.validate(cdx) == []
    doc = json.loads(cdx)
    assert doc["bomFormat"] == "CycloneDX"
    assert doc["specVersion"] == "1.6"


def test_cyclonedx_subject_and_packages(cdx: bytes) -> None:
    doc = json.loads(cdx)
    assert sbom_cdx.subject(doc) == DIGEST
    assert sbom_cdx.packages_in(doc) == {(p.name, p.version, p.architecture) for p in PACKAGES}
    image = doc["metadata"]["component"]
    assert image["name"] == "debian-12-base"
    assert image["version"] == DIGEST.removeprefix("sha256:")
    assert image["type"] == "file"


def test_cyclonedx_components(cdx: bytes) -> None:
    doc = json.loads(cdx)
    comps = cdx_by_purl(doc)
    assert len(doc["components"]) == len(PACKAGES)
    for p in PACKAGES:
        c = comps[sbom.purl(p)]
        assert (c["name"], c["version"], c["bom-ref"]) == (p.name, p.version, sbom.purl(p))
        props = {x["name"]: x["value"] for x in c["properties"]}
        assert props == {
            "baker:deb:architecture": p.architecture,
            "baker:deb:source": p.source,
            "baker:deb:source-version": p.source_version,
        }
    by_arch = {(c["name"], c["purl"].split("arch=")[1].split("&")[0]): c for c in comps.values()}
    assert "licenses" not in by_arch["bsdutils", "amd64"]
    assert by_arch["libc6", "amd64"]["licenses"] == by_arch["libc6", "i386"]["licenses"]
    libc = [x["license"] for x in by_arch["libc6", "amd64"]["licenses"]]
    # a deprecated SPDX id comes out as its successor; a Debian-only name as a named licence
    assert {x.get("id") or x.get("name") for x in libc} == {"LGPL-2.1-or-later", "GPL-2+"}
    assert {"name": "GPL-2+", "acknowledgement": "declared"} in libc
    util = [x["license"]["id"] for x in by_arch["util-linux", "amd64"]["licenses"]]
    assert sorted(util) == ["GPL-2.0-only", "MIT"]
    assert by_arch["tzdata", "all"]["licenses"] == [
        {"license": {"name": "public-domain", "acknowledgement": "declared"}}
    ]


def test_cyclonedx_dependencies(cdx: bytes) -> None:
    doc = json.loads(cdx)
    image_ref = doc["metadata"]["component"]["bom-ref"]
    # only the image's entry: an empty entry would claim a deb has no dependencies
    assert doc["dependencies"] == [
        {"ref": image_ref, "dependsOn": sorted(sbom.purl(p) for p in PACKAGES)}
    ]


def test_cyclonedx_deterministic(cdx: bytes) -> None:
    assert build(sbom_cdx.document) == cdx
    # order of the input does not matter either
    assert build(sbom_cdx.document, packages=list(reversed(PACKAGES))) == cdx
    doc = json.loads(cdx)
    other = json.loads(build(sbom_cdx.document, image_digest=OTHER_DIGEST))
    assert doc["serialNumber"].startswith("urn:uuid:")
    assert other["serialNumber"] != doc["serialNumber"]
    assert sbom_cdx.subject(other) == OTHER_DIGEST


def test_cyclonedx_timestamp_is_source_date(cdx: bytes) -> None:
    doc = json.loads(cdx)
    stamp = datetime.fromisoformat(doc["metadata"]["timestamp"])
    assert stamp == datetime.fromtimestamp(EPOCH, tz=UTC)
    later = json.loads(build(sbom_cdx.document, source_date_epoch=EPOCH + 3600))
    assert datetime.fromisoformat(later["metadata"]["timestamp"]).timestamp() == EPOCH + 3600


def tampered(data: bytes, change: Any) -> bytes:
    doc = json.loads(data)
    change(doc)
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d.update(specVersion="1.5"),
        lambda d: d.pop("bomFormat"),
        lambda d: d["components"][0].pop("name"),
        lambda d: d["metadata"]["component"].update(type="disk-image"),
        lambda d: d.update(unexpected=True),  # strict schema: no unknown properties
    ],
    ids=["spec-version", "no-bomFormat", "no-name", "bad-type", "extra-field"],
)
def test_cyclonedx_tampered_is_reported(cdx: bytes, change: Any) -> None:
    errors = sbom_cdx.validate(tampered(cdx, change))
    assert errors
    assert all(isinstance(e, str) for e in errors)


@pytest.mark.parametrize("data", [b"{not json", b"\xff\xfe", b"", b"[]", b'"CycloneDX"'])
def test_cyclonedx_garbage_is_reported(data: bytes) -> None:
    assert sbom_cdx.validate(data)


def test_cyclonedx_invalid_output_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sbom_cdx, "validate", lambda data: ["components/0: broken"])
    with pytest.raises(BuildError, match="components/0: broken"):
        build(sbom_cdx.document)


# -- SPDX ----------------------------------------------------------------------------------


def test_spdx_is_valid(spdx: bytes) -> None:
    assert sbom_spdx.validate(spdx) == []
    doc = json.loads(spdx)
    assert doc["spdxVersion"] == "SPDX-2.3"
    assert doc["creationInfo"]["creators"] == ["Tool: baker-0.1.0"]


def test_spdx_subject_and_packages(spdx: bytes) -> None:
    doc = json.loads(spdx)
    assert sbom_spdx.subject(doc) == DIGEST
    assert sbom_spdx.packages_in(doc) == {(p.name, p.version, p.architecture) for p in PACKAGES}
    # the other way of saying DESCRIBES is understood too
    doc["documentDescribes"] = ["SPDXRef-Image"]
    doc["relationships"] = [r for r in doc["relationships"] if r["relationshipType"] != "DESCRIBES"]
    assert sbom_spdx.subject(doc) == DIGEST


def test_spdx_packages_detail(spdx: bytes) -> None:
    doc = json.loads(spdx)
    (image,) = (p for p in doc["packages"] if p["SPDXID"] == "SPDXRef-Image")
    assert image["name"] == "debian-12-base"
    assert image["filesAnalyzed"] is False
    assert image["packageFileName"] == "image.qcow2"
    pkgs = spdx_by_purl(doc)
    assert len(doc["packages"]) == len(PACKAGES) + 1
    ids = {pkgs[sbom.purl(p)]["SPDXID"] for p in PACKAGES}
    assert len(ids) == len(PACKAGES)
    assert all(i.startswith("SPDXRef-") for i in ids)
    contains = {
        r["relatedSpdxElement"]
        for r in doc["relationships"]
        if r["relationshipType"] == "CONTAINS" and r["spdxElementId"] == "SPDXRef-Image"
    }
    assert contains == ids
    for p in PACKAGES:
        d = pkgs[sbom.purl(p)]
        assert (d["name"], d["versionInfo"]) == (p.name, p.version)
        assert d["supplier"] == d["downloadLocation"] == "NOASSERTION"
        assert d["externalRefs"][0]["referenceType"] == "purl"
        assert d["externalRefs"][0]["referenceLocator"] == sbom.purl(p)
        assert p.source in d["sourceInfo"]
        assert p.source_version in d["sourceInfo"]
    assert pkgs[named("util-linux")]["licenseDeclared"] == "GPL-2.0-only AND MIT"
    assert pkgs[named("zlib1g")]["licenseDeclared"] == "Zlib"
    libc = pkgs[named("libc6", "i386")]
    assert libc["licenseDeclared"] == "NOASSERTION"
    assert "GPL-2+" in libc["licenseComments"]
    assert "LGPL-2.1+" in libc["licenseComments"]
    bsdutils = pkgs[named("bsdutils")]
    assert bsdutils["licenseDeclared"] == "NOASSERTION"
    assert "licenseComments" not in bsdutils
    tzdata = pkgs[named("tzdata", "all")]
    assert tzdata["licenseDeclared"] == "NOASSERTION"
    assert tzdata["licenseComments"].endswith("public-domain")


def test_spdx_deterministic(spdx: bytes) -> None:
    assert build(sbom_spdx.document) == spdx
    assert build(sbom_spdx.document, packages=list(reversed(PACKAGES))) == spdx
    doc = json.loads(spdx)
    other = json.loads(build(sbom_spdx.document, image_digest=OTHER_DIGEST))
    assert other["documentNamespace"] != doc["documentNamespace"]
    assert DIGEST.removeprefix("sha256:") in doc["documentNamespace"]
    assert sbom_spdx.subject(other) == OTHER_DIGEST


def test_spdx_created_is_source_date(spdx: bytes) -> None:
    doc = json.loads(spdx)
    created = datetime.strptime(doc["creationInfo"]["created"], "%Y-%m-%dT%H:%M:%SZ")
    assert created.replace(tzinfo=UTC) == datetime.fromtimestamp(EPOCH, tz=UTC)


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d.update(spdxVersion="SPDX-2.2"),
        lambda d: d.update(spdxVersion="SPDX-9.9"),
        lambda d: d.pop("documentNamespace"),
        lambda d: d["packages"][1].pop("name"),
        lambda d: d["packages"][1].update(SPDXID="SPDXRef-not_valid"),
        lambda d: d["packages"][0]["checksums"][0].update(checksumValue="xyz"),
        lambda d: d.update(packages="not a list"),
        lambda d: d["relationships"].append(
            {
                "spdxElementId": "SPDXRef-Image",
                "relatedSpdxElement": "SPDXRef-Nowhere",
                "relationshipType": "CONTAINS",
            }
        ),
    ],
    ids=[
        "spec-2.2",
        "spec-9.9",
        "no-namespace",
        "no-name",
        "bad-id",
        "bad-checksum",
        "packages-not-list",
        "dangling-relationship",
    ],
)
def test_spdx_tampered_is_reported(spdx: bytes, change: Any) -> None:
    errors = sbom_spdx.validate(tampered(spdx, change))
    assert errors
    assert all(isinstance(e, str) for e in errors)


def test_spdx_invalid_output_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    class Message:
        validation_message = "spdx_id must only contain letters"

    monkeypatch.setattr(sbom_spdx, "validate_full_spdx_document", lambda doc, version: [Message()])
    with pytest.raises(BuildError, match="spdx_id must only contain letters"):
        build(sbom_spdx.document)


@pytest.mark.parametrize("data", [b"{not json", b"\xff\xfe", b"", b"[]", b"{}"])
def test_spdx_garbage_is_reported(data: bytes) -> None:
    assert sbom_spdx.validate(data)


def test_bad_digest_is_refused() -> None:
    for fn in (sbom_cdx.document, sbom_spdx.document):
        with pytest.raises(BuildError, match="digest"):
            build(fn, image_digest="3f" * 32)


def test_subjects_absent() -> None:
    assert sbom_cdx.subject({}) is None
    assert sbom_cdx.subject({"metadata": {"component": {"name": "x"}}}) is None
    assert sbom_spdx.subject({}) is None
    assert sbom_cdx.packages_in({}) == set()
    assert sbom_spdx.packages_in({}) == set()

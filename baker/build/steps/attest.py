"""The attest step: the evidence published beside the image. SBOMs from the image's own
package database, the provenance statement, and, with a signing key, the image signature and
the signed (DSSE) provenance."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from baker import __version__
from baker.evidence import provenance, sbom, signing
from baker.image.packages import Package


def dump(value: Any) -> bytes:
    """The JSON bytes baker publishes: sorted keys, so equal content is equal bytes."""
    return (json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


def write(
    work: Path,
    *,
    image: Path,
    record: dict[str, Any],
    packages: list[Package],
    copyrights: dict[str, str],
    invocation_id: str,
    key: ec.EllipticCurvePrivateKey | None,
) -> dict[str, Path]:
    """Write the evidence files into `work`; returns artifact name -> path."""
    digest = record["image"]["digest"]
    licenses = {name: sbom.licenses_from_copyright(text) for name, text in copyrights.items()}
    common = {
        "image_name": record["recipe"]["name"],
        "image_file": image.name,
        "image_digest": digest,
        "packages": packages,
        "licenses": licenses,
        "source_date_epoch": record["source_date_epoch"],
        "tool_version": __version__,
    }
    files = {
        "sbom.cdx.json": sbom.cyclonedx(**common),
        "sbom.spdx.json": sbom.spdx(**common),
    }
    statement = dump(
        provenance.statement(
            image_file=image.name, record=record, packages=packages, invocation_id=invocation_id
        )
    )
    files["provenance.json"] = statement
    if key is not None:
        # As cosign writes it: base64, no newline.
        files[f"{image.name}.sig"] = signing.sign_file(key, image).encode()
        files["provenance.dsse.json"] = dump(signing.dsse_sign(key, statement))
    out = {}
    for name, data in files.items():
        (work / name).write_bytes(data)
        out[name] = work / name
    return out

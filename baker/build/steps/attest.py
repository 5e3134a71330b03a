"""The attest step: the build record (build.json) for every backend, and the evidence
published beside a disk image: SBOMs from the image's own package database, the provenance
statement, and, with a signing key, the image signature and the signed (DSSE) provenance."""

from __future__ import annotations

import contextlib
import uuid
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from baker import __version__
from baker.artifact import BOOT, BUILD, DSSE, JUNIT, PROVENANCE, SBOM_CDX, SBOM_SPDX, dump_json
from baker.build.record import build_record
from baker.build.runner import Step
from baker.build.state import BuildState, Context, need
from baker.evidence import provenance, sbom_cdx, sbom_spdx, signing
from baker.evidence.licenses import licenses_from_copyright
from baker.evidence.sbom import Lineage, Subject
from baker.image import debian
from baker.image.packages import Package


def lineage(ctx: Context) -> Lineage | None:
    if ctx.parent is None:
        return None
    pin = ctx.parent.pin
    return Lineage(pin.name, pin.digest, ctx.parent.record.pins.packages)


class Attest(Step):
    name = "attest"

    def describe(self, ctx: Context) -> str:
        return "build record, SBOMs, provenance" + (", signature" if ctx.sign_key else "")

    def run(self, ctx: Context, state: BuildState, cleanup: contextlib.ExitStack) -> None:
        made = need(state.made, "the image")
        record = build_record(ctx, state)
        (ctx.work / BUILD).write_bytes(record.dump())
        state.files[BUILD] = ctx.work / BUILD
        state.files[JUNIT] = need(state.junit, "the test results")
        if state.boot is not None:
            (ctx.work / BOOT).write_bytes(state.boot.dump())
            state.files[BOOT] = ctx.work / BOOT
        # The evidence is about what the image step made: a disk file, named and hashed, or
        # a cloud image's id and the raw volume it holds (signed through ami.json, which
        # names both).
        state.files.update(
            write(
                ctx.work,
                image=state.files[made.signed],
                subject_name=made.name,
                digest=made.digest,
                record=record.model_dump(mode="json", exclude_none=True),
                packages=state.packages,
                copyrights=state.copyrights,
                invocation_id=str(uuid.uuid4()),
                key=ctx.sign_key,
                distro=debian.distro(ctx.spec.recipe.base),
                parent=lineage(ctx),
            )
        )


def write(
    work: Path,
    *,
    image: Path,
    record: dict[str, Any],
    packages: list[Package],
    copyrights: dict[str, str],
    invocation_id: str,
    key: ec.EllipticCurvePrivateKey | None,
    distro: str,
    subject_name: str | None = None,
    digest: str | None = None,
    parent: Lineage | None = None,
) -> dict[str, Path]:
    """Write the evidence files into `work`; returns artifact name -> path. The subject is
    `subject_name` (else the image file's name) with `digest` (else the record's image
    digest); the signature is over the file `image`, beside it as `<name>.sig`. `distro` is
    the packages' purl qualifier (debian-12)."""
    digest = digest or record["image"]["digest"]
    subject_name = subject_name or image.name
    licenses = {name: licenses_from_copyright(text) for name, text in copyrights.items()}
    subject = Subject(
        image_name=record["recipe"]["name"],
        image_file=subject_name,
        image_digest=digest,
        packages=packages,
        licenses=licenses,
        source_date_epoch=record["source_date_epoch"],
        tool_version=__version__,
        distro=distro,
        parent=parent,
    )
    files = {SBOM_CDX: sbom_cdx.document(subject), SBOM_SPDX: sbom_spdx.document(subject)}
    statement = dump_json(
        provenance.statement(
            image_file=subject_name,
            digest=digest,
            record=record,
            packages=packages,
            invocation_id=invocation_id,
            distro=distro,
        )
    )
    files[PROVENANCE] = statement
    if key is not None:
        # As cosign writes it: base64, no newline.
        files[f"{image.name}.sig"] = signing.sign_file(key, image).encode()
        files[DSSE] = dump_json(signing.dsse_sign(key, statement))
    out = {}
    for name, data in files.items():
        (work / name).write_bytes(data)
        out[name] = work / name
    return out

"""Commands that read artifacts and keys: verify, inspect, diff, keygen."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from baker.cli.shared import ArtifactArg, JsonOpt, command, err
from baker.errors import InputError


@command()
def keygen(
    directory: Annotated[Path, typer.Argument(help="Where baker.key and baker.pub go.")],
) -> None:
    """Write a signing key pair: DIR/baker.key and DIR/baker.pub. The private key is ECDSA
    P-256, mode 0600, encrypted when $BAKER_KEY_PASSPHRASE is set."""
    from baker.evidence import signing

    private, public = signing.keygen(directory)
    key = signing.load_public_key(public)
    typer.echo(f"{private}\n{public}\nfingerprint {signing.fingerprint(key)}")


def _env_trust() -> list[Path]:
    """$BAKER_TRUST_KEY: the key builds trust parents with, trusted here too."""
    named = os.environ.get("BAKER_TRUST_KEY")
    return [Path(named)] if named else []


@command("verify")
def verify_artifact(
    artifact: ArtifactArg,
    pub: Annotated[
        Path | None,
        typer.Option(
            help="The signer's public key (baker.pub) to check signatures.", metavar="KEY"
        ),
    ] = None,
    live: Annotated[
        bool,
        typer.Option(
            "--live",
            help="For an EC2 artifact: also read the AMI's snapshot back from AWS (the usual "
            "credentials) and compare its digest.",
        ),
    ] = False,
    trust: Annotated[
        list[Path] | None,
        typer.Option(
            "--trust",
            help="For a child image, with --pub: a key its parent may be signed by besides "
            "--pub's (again for more; $BAKER_TRUST_KEY too).",
            metavar="KEY",
        ),
    ] = None,
    revocations: Annotated[
        Path | None,
        typer.Option(
            "--revocations",
            help="A file from `baker revocations export`: fail if it revokes the image or "
            "one of its ancestors.",
            metavar="FILE",
        ),
    ] = None,
    online: Annotated[
        str | None,
        typer.Option(
            "--online",
            help="Also ask the registry holding the image (host/repository[:tag]) whether it, "
            "or one of its ancestors, is revoked.",
            metavar="REF",
        ),
    ] = None,
) -> None:
    """Check an artifact, one line per check. Checksums, signatures (with --pub), provenance,
    SBOMs and digests, a child's lineage, revocations; exit 0 only if every check holds."""
    from baker.ami import live as live_check
    from baker.evidence import verify

    trusted = [*(trust or []), *_env_trust()]
    for key in trusted:
        if not key.is_file():
            raise InputError(f"--trust {key}: no such key file.")
    from baker.evidence import revocation

    statements = revocation.load_file(revocations) if revocations else []
    if online:
        statements += _online(online)
    findings = verify.verify(
        artifact,
        pub,
        live=live_check.check if live else None,
        trusted=tuple(trusted),
        statements=statements,
    )
    for finding in findings:
        typer.echo(finding.line())
    failed = [f for f in findings if f.ok is False]
    if failed:
        err.print(f"baker: {len(failed)} of {len(findings)} checks failed.", highlight=False)
        raise typer.Exit(1)


def _online(text: str) -> list[tuple[object, str]]:
    """The revocations a registry holds for REF's image and in its repository."""
    from baker.registry import revocations
    from baker.registry.client import connect
    from baker.registry.ref import parse

    ref = parse(text, "--online")
    client = connect(ref)
    got = client.get_manifest(ref.repository, ref.reference)
    if got is None:
        return revocations.of_repository(client, ref.repository)
    return revocations.of_image(client, ref.repository, got[2])


@command()
def inspect(artifact: ArtifactArg, as_json: JsonOpt = False) -> None:
    """Summarize an artifact. Its digest, base, packages, boot time, tests and signer."""
    from baker.inspect import summary

    info = summary.summarize(artifact)
    typer.echo(json.dumps(info, indent=2, sort_keys=True) if as_json else summary.render(info))


@command()
def diff(
    a: Annotated[Path, typer.Argument(help="An artifact directory or image file.")],
    b: Annotated[Path, typer.Argument(help="Another one.")],
    as_json: JsonOpt = False,
) -> None:
    """Say what differs between two images. Packages (from the SBOMs), files and their
    metadata (read from the images, without booting them), and disk-level metadata."""
    from baker.inspect import diff as differ

    d = differ.diff(a, b)
    typer.echo(json.dumps(d.as_dict(), indent=2, sort_keys=True) if as_json else differ.render(d))

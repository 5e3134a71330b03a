"""Commands for OCI registries: push, pull, promote (baker.registry)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from baker.cli.shared import ArtifactArg, command, reporter
from baker.errors import InputError

if TYPE_CHECKING:
    from baker.registry.client import Client
    from baker.registry.ref import Ref

InsecureOpt = Annotated[
    bool,
    typer.Option(
        "--insecure", help="Plain HTTP (taken for a loopback registry without TLS anyway)."
    ),
]
CaOpt = Annotated[
    Path | None,
    typer.Option(
        "--ca-bundle",
        help="PEM file of the CAs that sign the registry's certificate.",
        metavar="FILE",
    ),
]


def registry_client(ref: Ref, insecure: bool, ca_bundle: Path | None) -> Client:
    from baker.registry.client import connect

    return connect(ref, insecure=insecure, ca_bundle=ca_bundle)


@command()
def push(
    artifact: ArtifactArg,
    ref: Annotated[str, typer.Argument(help="host[:port]/repository[:tag] to push to.")],
    containerdisk: Annotated[
        bool,
        typer.Option(
            "--containerdisk",
            help="Also push a KubeVirt containerDisk image, tagged TAG-containerdisk.",
        ),
    ] = False,
    insecure: InsecureOpt = False,
    ca_bundle: CaOpt = None,
) -> None:
    """Push an artifact to an OCI registry. One manifest (the disk, build.json and the files
    they are checked against), with the SBOMs, provenance and signature as its referrers;
    blobs the registry has are not sent again. Last line: REF@sha256:<manifest digest>."""
    from baker import artifact as layout
    from baker.progress import Meter
    from baker.registry import containerdisk as cd
    from baker.registry import push as pusher
    from baker.registry.ref import parse

    target = parse(ref)
    if containerdisk and target.digest and not target.tag:
        raise InputError(f"REF {ref}: --containerdisk needs a tag to derive its own tag from.")
    files = pusher.artifact_files(artifact)
    client = registry_client(target, insecure, ca_bundle)
    rep = reporter()
    total = sum(f.size for f in files)
    with Meter(rep, f"push {artifact} to {target.repo()}", total) as meter:
        pushed = pusher.push(client, artifact, target, on_bytes=meter.advance, files=files)
    rep.info(f"sent {pushed.sent} bytes; {pushed.referrers} referrers")
    if containerdisk:
        tag = f"{target.tag or 'latest'}-containerdisk"
        size = (artifact / layout.IMAGE).stat().st_size
        with Meter(rep, f"containerDisk {target.tagged(tag)}", size) as meter:
            disk_ref, _ = cd.push_containerdisk(client, artifact, target.tagged(tag), meter.advance)
        typer.echo(f"{target.tagged(tag)}@{disk_ref.digest}")
    typer.echo(f"{target}@{pushed.ref.digest}" if target.tag else str(pushed.ref))


@command()
def pull(
    ref: Annotated[str, typer.Argument(help="host[:port]/repository:tag or …@sha256:… to pull.")],
    into: Annotated[
        Path, typer.Option("--into", help="The artifact directory to create.", metavar="DIR")
    ],
    pub: Annotated[
        Path, typer.Option("--pub", help="The signer's public key (baker.pub).", metavar="KEY")
    ],
    insecure: InsecureOpt = False,
    ca_bundle: CaOpt = None,
) -> None:
    """Pull an artifact, checked before DIR appears. Every blob is checked against its digest
    as it streams and everything `baker verify` checks must hold. Prints the digest."""
    from baker.evidence import signing
    from baker.progress import Meter
    from baker.registry import pull as puller
    from baker.registry.ref import parse

    source = parse(ref)
    signing.load_public_key(pub)  # a bad key is the user's mistake: said before any transfer
    puller.check_target(into)
    client = registry_client(source, insecure, ca_bundle)
    rep = reporter()
    with Meter(rep, f"pull {source} into {into}", 0) as meter:
        digest = puller.pull(client, source, into, pub, rep.info, meter.advance)
    rep.info(f"verified: {into}")
    typer.echo(f"{source.repo()}@{digest}")


@command()
def promote(
    src: Annotated[str, typer.Argument(help="The image to promote (host/repo:tag or @sha256:…).")],
    dst: Annotated[str, typer.Argument(help="Where it goes (host/repo:tag).")],
    force: Annotated[
        bool, typer.Option("--force", help="Move DST's tag if it names another digest.")
    ] = False,
    insecure: InsecureOpt = False,
    ca_bundle: CaOpt = None,
) -> None:
    """Copy an image by digest to another repository or tag. Its referrers go along; blobs
    are mounted on the same registry, not sent again. Last line: DST@sha256:<digest>."""
    from baker.registry import promote as promoter
    from baker.registry.ref import parse

    source, target = parse(src, "SRC_REF"), parse(dst, "DST_REF")
    src_client = registry_client(source, insecure, ca_bundle)
    dst_client = (
        src_client if target.host == source.host else registry_client(target, insecure, ca_bundle)
    )
    rep = reporter()
    at, sent = promoter.promote(src_client, source, dst_client, target, force, rep.info)
    rep.info(f"sent {sent} bytes")
    typer.echo(f"{target}@{at.digest}" if target.tag and not target.digest else str(at))

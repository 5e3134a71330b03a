"""Commands for carrying images across an air gap: convert, export, import."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from baker.cli.shared import ArtifactArg, command, reporter
from baker.errors import InputError

FormatOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--format",
        help="raw, qcow2, vmdk, vhdx, vhd, ova: repeatable or a comma list.",
        metavar="FORMATS",
    ),
]


@command()
def convert(artifact: ArtifactArg, formats: FormatOpt = None) -> None:
    """Write the image in other disk formats beside it. image.vmdk, image.ova and the rest
    are listed in SHA256SUMS; converting again gives the same bytes."""
    from baker.formats import convert as converting
    from baker.progress import human, rate

    def run() -> tuple[list[converting.Converted], float]:
        asked = converting.parse_formats(formats or [])
        if not asked:
            raise InputError("give at least one --format.")
        started = time.monotonic()
        return converting.convert(artifact, asked, reporter()), time.monotonic() - started

    done, seconds = run()
    for c in done:
        note = "" if c.made else "  (already there)"
        typer.echo(f"{c.name}  {human(c.size)}  sha256:{c.sha256}{note}")
    made = sum(c.size for c in done if c.made)
    typer.echo(
        f"{artifact}: {len(done)} formats; wrote {human(made)} in {seconds:.1f} s "
        f"({rate(made, seconds)})"
    )


@command()
def export(
    artifact: ArtifactArg,
    to: Annotated[
        Path, typer.Option("--to", help="The bundle to write (a .tar).", metavar="BUNDLE")
    ],
    formats: FormatOpt = None,
    with_sources: Annotated[
        bool,
        typer.Option(
            "--with-sources",
            help="Add the recipe, its lock, the pinned files and the locked .deb files.",
        ),
    ] = False,
    pub: Annotated[
        Path | None,
        typer.Option(
            help="The signer's public key (required for a signed artifact).", metavar="KEY"
        ),
    ] = None,
    recipe: Annotated[
        Path | None,
        typer.Option(help="The recipe the artifact was built from, if not where build.json says."),
    ] = None,
) -> None:
    """Write an artifact into one tar to carry elsewhere. The image, its evidence and
    VERIFY.txt (and with --with-sources, what an offline rebuild needs), deterministic."""
    from baker.build import rebuild
    from baker.bundle import export as bundle
    from baker.bundle import layout
    from baker.cache import Cache
    from baker.formats import convert

    def run() -> bundle.Exported:
        asked = convert.parse_formats(formats or [])
        # A child carries its parent, found and verified again as its build found it.
        parent = rebuild.parent_as_built(artifact, recipe, Cache()) if with_sources else None
        return bundle.export(
            artifact, to, reporter(), formats=asked, with_sources=with_sources, pub=pub,
            recipe=recipe, parent=parent,
        )  # fmt: skip

    done = run()
    signer = f"signed by {done.signer}" if done.signer else "UNSIGNED (no signature to carry)"
    typer.echo(f"{signer}; {'with' if done.sources else 'without'} sources")
    typer.echo(
        f"{done.path}: {done.members} files, {layout.summary_line(done.size, done.seconds)}, "
        f"sha256:{done.sha256}"
    )


@command("import")
def import_(
    bundle_file: Annotated[Path, typer.Argument(help="A bundle written by baker export.")],
    into: Annotated[
        Path, typer.Option("--into", help="The new artifact directory.", metavar="DIR")
    ],
    pub: Annotated[
        Path | None,
        typer.Option(
            help="The public key you trust; required if the bundle is signed.", metavar="KEY"
        ),
    ] = None,
    revocations: Annotated[
        Path | None,
        typer.Option(
            "--revocations",
            help="A file from `baker revocations export`: refuse an image it revokes, or "
            "one built on an image it revokes.",
            metavar="FILE",
        ),
    ] = None,
) -> None:
    """Check a bundle completely, then extract it into DIR. Checksums, signature (--pub),
    provenance, converted disks and sources; its .deb files go into the package cache."""
    from baker.bundle import importer, layout
    from baker.evidence import revocation

    statements = revocation.load_file(revocations) if revocations else []
    done = importer.import_bundle(bundle_file, into, reporter(), pub=pub, statements=statements)
    for line in done.checks:
        typer.echo(line)
    if done.signer:
        typer.echo(f"signed by {done.signer}, the key you gave")
    else:
        typer.echo("UNSIGNED: checksums and provenance hold, but nothing proves who built it")
    typer.echo(
        f"imported {done.name} ({done.digest}) into {done.directory}: {done.files} files, "
        f"{done.debs} packages into the cache, {layout.summary_line(done.size, done.seconds)}"
    )
    if done.recipe:
        typer.echo(
            f"rebuild offline: baker rebuild --check {done.directory} --recipe {done.recipe}"
        )

"""`baker clean`: remove what builds that are gone left behind (libvirt domains, their work
directories), a killed baker's or a build kept with `--on-error keep`."""

from __future__ import annotations

from typing import Annotated

import typer

from baker.cli.shared import command
from baker.errors import BakerError, BuildError


@command()
def clean(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only list what would be removed.")
    ] = False,
    uri: Annotated[str, typer.Option(help="The libvirt URI to look for domains on.")] = (
        "qemu:///system"
    ),
) -> None:
    """Remove what builds that are gone left behind. Their libvirt domains and work
    directories; a running build's are never touched."""
    from baker.backends.libvirt import stale_domains
    from baker.leftovers import stale_work_dirs, work_root

    found, trouble = [], None
    try:
        found += stale_domains(uri)
    except BakerError as e:
        trouble = e
    found += stale_work_dirs(work_root())
    for item in found:
        typer.echo(f"{'would remove' if dry_run else 'removed'} {item.kind} {item.name}: "
                   f"{item.why}")  # fmt: skip
        if not dry_run:
            item.remove()
    if not found:
        typer.echo("nothing to clean")
    if trouble is not None:
        raise BuildError(f"the work directories are done, but no domain was looked at: {trouble}")

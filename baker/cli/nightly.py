"""`baker nightly`: the CI nightly rebuild of a set of recipes (baker.nightly)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from baker.build.options import Options
from baker.cli.shared import command, err, with_options
from baker.errors import BuildError, InputError


@command()
@with_options("accel", "sign_key")
def nightly(
    recipe_files: Annotated[
        list[Path], typer.Argument(help="The recipes (images/NAME.yaml).", metavar="RECIPE")
    ],
    out: Annotated[
        Path, typer.Option(help="Where each image's last good artifact is kept.", metavar="DIR")
    ] = Path("out"),
    history: Annotated[
        str, typer.Option(help="An SQLite file, or a postgresql:// URL.", metavar="DB")
    ] = "out/history.db",
    report: Annotated[
        Path | None, typer.Option(help="Write the report site here.", metavar="DIR")
    ] = None,
    junit: Annotated[
        Path | None, typer.Option(help="Write the night's JUnit file here.", metavar="FILE")
    ] = None,
    jobs: Annotated[
        int, typer.Option("--jobs", "-j", help="How many recipes to build at once.", metavar="N")
    ] = 1,
    broker: Annotated[
        str | None,
        typer.Option(
            help="Build on the farm through this Redis broker (baker worker).", metavar="URL"
        ),
    ] = None,
    *,
    options: Options,
) -> None:
    """Rebuild recipes as a night and record it. What did not change is reused ("unchanged");
    what did is built and tested, its drift from the last good build reported with the
    CVEs the upgrades fix, and held to its regression gates. Exit 0 if every recipe built
    or was unchanged, 1 if any failed."""
    from baker.nightly import drift, run
    from baker.nightly import report as site
    from baker.nightly.history import History

    if jobs < 1:
        raise InputError(f"--jobs {jobs}: expected 1 or more builds at once.")
    for f in recipe_files:
        if not f.is_file():
            raise InputError(f"{f}: no such recipe file.")
    db = History(history)
    try:
        night, nights = run.run(recipe_files, out, db, options, jobs, _say, broker)
        for n in nights:
            line = f"{n.name} {n.status}" + (f" {n.digest}" if n.digest else "")
            typer.echo(line + (f": {n.error}" if n.error else ""))
            if n.drift:
                err.print(
                    drift.render(n.name, n.drift),
                    markup=False,
                    highlight=False,
                    soft_wrap=True,
                )
        if junit is not None:
            run.junit(night, nights, junit)
        if report is not None:
            index = site.write(db, night, report)
            err.print(f"baker: report: {index}", markup=False, highlight=False)
    finally:
        db.close()
    failed = [n.name for n in nights if n.status == "failed"]
    if failed:
        raise BuildError(
            f"{len(failed)} of {len(nights)} recipes failed tonight: {', '.join(failed)}."
        )


def _say(line: str) -> None:
    err.print(line, markup=False, highlight=False, soft_wrap=True)

"""Commands that bake: build, validate, lock, rebuild."""

from __future__ import annotations

import dataclasses
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer

from baker import recipe
from baker.build import parallel
from baker.build.options import Failure, Options, argv
from baker.cli.shared import RecipeArg, RootOpt, VarOpt, command, err, reporter, with_options
from baker.errors import InputError


@command()
@with_options("out", "parents", "accel", "sign_key", "no_cache", "boot_runs", "vuln_db", "on_error")
def build(
    recipe_files: Annotated[
        list[Path],
        typer.Argument(help="The recipe files (images/NAME.yaml).", metavar="RECIPE"),
    ],
    var: VarOpt = None,
    root: RootOpt = None,
    jobs: Annotated[
        int,
        typer.Option(
            "--jobs", "-j", help="With several recipes: how many to build at once.", metavar="N"
        ),
    ] = 1,
    *,
    options: Options,
) -> None:
    """Bake each RECIPE into OUT/NAME and print its digest. The digest is the last line;
    several recipes are built as builds of their own, N at a time, each printing NAME
    DIGEST."""
    # Bad input is reported before the heavier pipeline modules are even imported.
    specs = [recipe.load(f, recipe.parse_vars(var), root) for f in recipe_files]
    if jobs < 1:
        raise InputError(f"--jobs {jobs}: expected 1 or more builds at once.")
    if len(specs) > 1:
        if options.on_error == "ask":
            raise InputError("--on-error ask takes one recipe: several builds share no terminal.")
        if clash := parallel.names_unique([(s.source, s.name) for s in specs]):
            raise InputError(clash)
        from baker.artifact import check_out_dir

        check_out_dir(options.out)  # once here, not as many times as there are builds
        child = [*argv(options), *(f"--var={v}" for v in var or []),
                 *([f"--root={root}"] if root else [])]  # fmt: skip
        _build_many([(s.name, f) for s, f in zip(specs, recipe_files, strict=True)], child, jobs)
        return
    (spec,) = specs
    from baker.build.pipeline import build as run_build

    progress = reporter()
    if options.on_error == "ask" and not (sys.stdin.isatty() and sys.stderr.isatty()):
        progress.info("--on-error ask needs a terminal; a failure aborts the build")
        options = dataclasses.replace(options, on_error="abort")
    if options.on_error == "ask":
        options = dataclasses.replace(options, decide=_ask)
    result = run_build(spec, options, progress)
    progress.info(f"published {result.artifact}")
    typer.echo(result.digest)


def _build_many(recipes: list[tuple[str, Path]], options: list[str], jobs: int) -> None:
    done = parallel.run_all(
        [parallel.Job(name, parallel.child_argv(path, options)) for name, path in recipes],
        jobs,
        lambda line: err.print(line, markup=False, highlight=False, soft_wrap=True),
    )
    for job in done:
        typer.echo(f"{job.name} {job.digest or f'failed (exit {job.code})'}")
    parallel.summary(done)


def _ask(failure: Failure) -> str:
    """--on-error ask: what to do about a failed step, asked on the terminal."""
    err.print(f"baker: the {failure.step} step failed: {failure.error}", markup=False,
              highlight=False, soft_wrap=True)  # fmt: skip
    while True:
        answer = typer.prompt(
            "[r]etry the step on this machine, open a [s]hell on it, [k]eep it and stop, or "
            "[a]bort", default="a", err=True,
        ).strip().lower()[:1]  # fmt: skip
        if answer == "s" and failure.ssh:
            err.print(f"baker: {failure.ssh}   (exit the shell to come back here)")
            subprocess.run(shlex.split(failure.ssh), check=False)
            continue
        choice = {"r": "retry", "k": "keep", "a": "abort"}.get(answer)
        if choice:
            return choice


@command()
def validate(recipe_file: RecipeArg, var: VarOpt = None, root: RootOpt = None) -> None:
    """Check RECIPE without starting anything: its template, fields and file pins."""
    spec = recipe.load(recipe_file, recipe.parse_vars(var), root)
    typer.echo(
        f"{recipe_file}: ok ({spec.name}, {len(spec.recipe.provisioners)} provisioners, "
        f"{len(spec.recipe.tests)} test files)"
    )


@command()
def lock(
    recipe_file: RecipeArg,
    var: VarOpt = None,
    root: RootOpt = None,
    update: Annotated[bool, typer.Option("--update", help="Replace an existing lock.")] = False,
    parents: Annotated[
        Path,
        typer.Option(
            "--parents",
            metavar="DIR",
            help="Where a `base.image: recipe:FILE` parent's artifact is found (DIR/NAME).",
        ),
    ] = Path("out"),
) -> None:
    """Pin RECIPE's packages in a lock file beside it. The base's whole package set, at exact
    versions with the hashes of their .deb files, which are fetched into the package cache;
    for a child, its own packages as they install on its verified parent, and for a parent
    named by a registry tag, the digest the tag names now."""
    from baker.cache import Cache
    from baker.image import apt, debian
    from baker.leftovers import workdir
    from baker.recipe import lock as lockfile

    spec = recipe.load(recipe_file, recipe.parse_vars(var), root)
    path = lockfile.path_for(spec.source)
    if path.exists() and not update:
        raise InputError(f"{path} exists; `baker lock --update {recipe_file}` refreshes it.")
    base = spec.recipe.base
    progress = reporter()
    if spec.cloud_image is not None:
        raise InputError(
            f"{spec.where('base.image')}: base.image: a cloud image is pinned by base.sha256 "
            "alone; baker lock does not pin packages on one yet."
        )
    if base.image is not None:
        from baker.build.parent import lock_child

        with workdir(None) as work, progress.step("lock", "the parent, and packages on it"):
            locked = lock_child(spec, Cache(), work, progress.info,
                                lambda line: progress.output("apt", line), parents)  # fmt: skip
        _write_lock(path, locked.dump())
        pinned = [f"the parent {locked.parent.reference} pinned at {locked.parent.digest}"
                  ] if locked.parent else []  # fmt: skip
        if base.packages:
            count = len(locked.packages)
            pinned.append(f"{count} package{'' if count == 1 else 's'} of its own")
        typer.echo(f"{path}: {', '.join(pinned)}, {locked.digest}")
        return
    try:
        with workdir(None) as work, progress.step("lock", "resolve packages (mmdebstrap)"):
            locked = apt.resolve(
                base, debian.wanted(base), debian.sources(base), Cache(), work,
                lambda line: progress.output("mmdebstrap", line),
            )  # fmt: skip
    except apt.UnknownPackage as e:
        raise InputError(f"{spec.where(e.field)}: {e}") from None
    _write_lock(path, locked.dump())
    typer.echo(
        f"{path}: {len(locked.packages)} packages, resolved {locked.resolved}, {locked.digest}"
    )


def _write_lock(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.rename(path)


@command()
@with_options("accel")
def rebuild(
    artifact: Annotated[Path, typer.Argument(help="An artifact directory (out/NAME).")],
    check: Annotated[
        bool, typer.Option("--check", help="Rebuild and compare the image digests.")
    ] = False,
    recipe_file: Annotated[
        Path | None,
        typer.Option("--recipe", help="The recipe to rebuild from, if not where build.json says."),
    ] = None,
    root: RootOpt = None,
    keep: Annotated[
        Path | None,
        typer.Option(
            "--keep",
            help="Keep the rebuilt artifact in DIR/NAME, to compare its evidence too.",
            metavar="DIR",
        ),
    ] = None,
    *,
    options: Options,
) -> None:
    """Rebuild an artifact from its recorded pins and compare. The recipe is built again in a
    fresh work directory; with --check, exit 0 only if the new image has the same digest,
    else say which files differ."""
    from baker.build import rebuild as rebuilding

    if not check:
        raise InputError("baker rebuild needs --check (the only mode so far).")
    outcome = rebuilding.check(artifact, reporter(), options.accel, recipe_file, root, keep)
    if outcome.reproduced:
        typer.echo(f"reproduced {outcome.actual}")
        return
    typer.echo(
        f"NOT reproduced: {artifact} has {outcome.expected}, the rebuild gave {outcome.actual}"
    )
    if outcome.recipe_changed:
        typer.echo("(the recipe changed since the artifact was built)")
    typer.echo(outcome.difference)
    raise typer.Exit(1)

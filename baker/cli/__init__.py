"""The command line (DESIGN.md, CLI contract). Exit 0 success, 1 failure, 2 bad input; errors are
one sentence on stderr, never a traceback for a user's mistake."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console

from baker import __version__, recipe
from baker.errors import BakerError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Bake reproducible golden VM images, with the evidence of what went into them.",
)
err = Console(stderr=True)


class Interrupted(BakerError):
    exit_code = 130


def _on_signal(signum: int, _frame: object) -> NoReturn:
    # Raised at the point the build is at, so every cleanup on the way out still runs. A
    # KeyboardInterrupt, like Ctrl-C: libraries' `except Exception` (paramiko's, waiting on
    # a channel) would swallow or re-dress anything less and leave the build running.
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


def _fail(e: BakerError) -> NoReturn:
    err.print(f"baker: error: {e}", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(e.exit_code)


VarOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--var", help="Set a recipe variable: KEY=VALUE (repeatable).", metavar="KEY=VALUE"
    ),
]
RecipeArg = Annotated[Path, typer.Argument(help="The recipe file (images/NAME.yaml).")]


@app.command()
def build(
    recipe_file: RecipeArg,
    var: VarOpt = None,
    out: Annotated[Path, typer.Option(help="Where the artifact directory goes.")] = Path("out"),
    accel: Annotated[str, typer.Option(help="auto, kvm or tcg.")] = "auto",
    sign_key: Annotated[
        Path | None,
        typer.Option(
            help="ECDSA P-256 private key (baker keygen) to sign the image and provenance; "
            "$BAKER_SIGN_KEY by default.",
            envvar="BAKER_SIGN_KEY",
        ),
    ] = None,
) -> None:
    """Bake RECIPE into OUT/NAME/; prints the image digest as the last line."""
    from baker.progress import Reporter

    reporter = Reporter(err)
    try:
        # Bad input is reported before the heavier pipeline modules are even imported.
        spec = recipe.load(recipe_file, dict(recipe.parse_var(v) for v in var or []))
        if accel not in ("auto", "kvm", "tcg"):
            raise recipe.InputError(f"--accel {accel}: expected auto, kvm or tcg.")
        from baker.build.options import Options
        from baker.build.pipeline import build as run_build

        result = run_build(spec, Options(out=out, accel=accel, sign_key=sign_key), reporter)
    except BakerError as e:
        _fail(e)
    except KeyboardInterrupt:
        _fail(Interrupted("interrupted; cleaned up."))
    reporter.info(f"published {result.artifact}")
    typer.echo(result.digest)


@app.command()
def validate(recipe_file: RecipeArg, var: VarOpt = None) -> None:
    """Check RECIPE (template, fields, file pins) without starting anything."""
    try:
        spec = recipe.load(recipe_file, dict(recipe.parse_var(v) for v in var or []))
    except BakerError as e:
        _fail(e)
    typer.echo(
        f"{recipe_file}: ok ({spec.name}, {len(spec.recipe.provisioners)} provisioners, "
        f"{len(spec.recipe.tests)} test files)"
    )


@app.command()
def lock(
    recipe_file: RecipeArg,
    var: VarOpt = None,
    update: Annotated[bool, typer.Option("--update", help="Replace an existing lock.")] = False,
) -> None:
    """Resolve the base's full package set to exact versions and .deb hashes, into
    RECIPE's .lock beside it, and fetch those files into the package cache."""
    from baker import lock as lockfile
    from baker.build.options import workdir
    from baker.build.steps import base as rootfs
    from baker.cache import Cache
    from baker.progress import Reporter

    reporter = Reporter(err)
    try:
        spec = recipe.load(recipe_file, dict(recipe.parse_var(v) for v in var or []))
        path = lockfile.path_for(spec.source)
        if path.exists() and not update:
            raise recipe.InputError(
                f"{path} exists; `baker lock --update {recipe_file}` refreshes it."
            )
        base = spec.recipe.base
        with workdir(None) as work, reporter.step("lock", "resolve packages (mmdebstrap)"):
            locked = lockfile.resolve(
                base, rootfs.wanted(base), rootfs.sources(base), Cache(), work,
                lambda line: reporter.output("mmdebstrap", line),
            )  # fmt: skip
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(locked.dump())
        tmp.rename(path)
    except BakerError as e:
        _fail(e)
    except KeyboardInterrupt:
        _fail(Interrupted("interrupted; cleaned up."))
    typer.echo(
        f"{path}: {len(locked.packages)} packages, resolved {locked.resolved}, {locked.digest}"
    )


@app.command()
def rebuild(
    artifact: Annotated[Path, typer.Argument(help="An artifact directory (out/NAME).")],
    check: Annotated[
        bool, typer.Option("--check", help="Rebuild and compare the image digests.")
    ] = False,
    accel: Annotated[str, typer.Option(help="auto, kvm or tcg.")] = "auto",
    recipe_file: Annotated[
        Path | None,
        typer.Option("--recipe", help="The recipe to rebuild from, if not where build.json says."),
    ] = None,
) -> None:
    """Rebuild ARTIFACT's recipe from its recorded pins in a fresh work directory; with
    --check, exit 0 only if the new image has the same digest (else say which files differ)."""
    from baker.build import rebuild as rebuilding
    from baker.progress import Reporter

    try:
        if not check:
            raise recipe.InputError("baker rebuild needs --check (the only mode so far).")
        outcome = rebuilding.check(artifact, Reporter(err), accel, recipe_file)
    except BakerError as e:
        _fail(e)
    except KeyboardInterrupt:
        _fail(Interrupted("interrupted; cleaned up."))
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


@app.command()
def diff(
    a: Annotated[Path, typer.Argument(help="An artifact directory or image file.")],
    b: Annotated[Path, typer.Argument(help="Another one.")],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """What differs between two images: packages (from the SBOMs), files and their metadata
    (read from the images, without booting them), and disk-level metadata."""
    import json

    from baker.inspect import diff as differ

    try:
        d = differ.diff(a, b)
    except BakerError as e:
        _fail(e)
    typer.echo(json.dumps(d.as_dict(), indent=2, sort_keys=True) if as_json else differ.render(d))


@app.command()
def keygen(
    directory: Annotated[Path, typer.Argument(help="Where baker.key and baker.pub go.")],
) -> None:
    """Write an ECDSA P-256 key pair: DIR/baker.key (0600; encrypted when
    $BAKER_KEY_PASSPHRASE is set) and DIR/baker.pub."""
    from baker.evidence import signing

    try:
        private, public = signing.keygen(directory)
    except BakerError as e:
        _fail(e)
    key = signing.load_public_key(public)
    typer.echo(f"{private}\n{public}\nfingerprint {signing.fingerprint(key)}")


@app.command("verify")
def verify_artifact(
    artifact: Annotated[Path, typer.Argument(help="An artifact directory (out/NAME).")],
    pub: Annotated[
        Path | None, typer.Option(help="The signer's public key (baker.pub) to check signatures.")
    ] = None,
) -> None:
    """Check an artifact offline: checksums, signature, provenance, SBOMs, digests. Exit 0
    only if every check holds; one line per check."""
    from baker.evidence import verify as check

    try:
        findings = check.verify(artifact, pub)
    except BakerError as e:
        _fail(e)
    for finding in findings:
        typer.echo(finding.line())
    failed = [f for f in findings if f.ok is False]
    if failed:
        err.print(f"baker: {len(failed)} of {len(findings)} checks failed.", highlight=False)
        raise typer.Exit(1)


@app.command()
def inspect(
    artifact: Annotated[Path, typer.Argument(help="An artifact directory (out/NAME).")],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Summarize an artifact: digest, base, packages, boot time, tests, signer."""
    import json

    from baker.inspect import summary

    try:
        info = summary.summarize(artifact)
    except BakerError as e:
        _fail(e)
    typer.echo(json.dumps(info, indent=2, sort_keys=True) if as_json else summary.render(info))


@app.command()
def version() -> None:
    """Print baker's version."""
    typer.echo(__version__)


def _register_more() -> None:
    # Commands of their own modules, kept out of this file so it stays small.
    from baker.cli import cloud as cli_cloud
    from baker.cli import export as cli_export

    cli_export.register(app)
    cli_cloud.register(app)


_register_more()


def main() -> None:
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)
    try:
        app()
    except KeyboardInterrupt:
        err.print("baker: error: interrupted; cleaned up.")
        sys.exit(130)

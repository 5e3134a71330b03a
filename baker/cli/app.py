"""The typer application every command registers on, and the one error-handling decorator:
a user's mistake or a failed build is one `baker: error:` line and its exit code (DESIGN.md,
CLI contract: 0 success, 1 failure, 2 bad input, 130 interrupted), never a traceback."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn, ParamSpec, TypeVar

import typer
from rich.console import Console

from baker.errors import BakerError

if TYPE_CHECKING:
    from baker.progress import Reporter

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Bake reproducible golden VM images, with the evidence of what went into them.",
)
err = Console(stderr=True)

P = ParamSpec("P")
R = TypeVar("R")


class Interrupted(BakerError):
    exit_code = 130


def fail(e: BakerError) -> NoReturn:
    err.print(f"baker: error: {e}", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(e.exit_code)


def guarded(fn: Callable[P, R]) -> Callable[P, R]:
    """A command whose BakerError, or Ctrl-C (SIGTERM and SIGHUP arrive as one), becomes one
    line and its exit code, after every cleanup on the way out has run."""

    @functools.wraps(fn)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except BakerError as e:
            fail(e)
        except KeyboardInterrupt:
            fail(Interrupted("interrupted; cleaned up."))

    return run


def command(
    name: str | None = None, on: typer.Typer = app
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Register a guarded command on `on` (the main app by default)."""

    def register(fn: Callable[P, R]) -> Callable[P, R]:
        wrapped = guarded(fn)
        on.command(name)(wrapped)
        return wrapped

    return register


def reporter() -> Reporter:
    """Progress on stderr: imported when a command needs it, not for `baker --help`."""
    from baker.progress import Reporter

    return Reporter(err)


VarOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--var", help="Set a recipe variable: KEY=VALUE (repeatable).", metavar="KEY=VALUE"
    ),
]
RecipeArg = Annotated[Path, typer.Argument(help="The recipe file (images/NAME.yaml).")]
ArtifactArg = Annotated[Path, typer.Argument(help="An artifact directory (out/NAME).")]
AccelOpt = Annotated[str, typer.Option(help="auto, kvm or tcg.")]
RootOpt = Annotated[
    Path | None,
    typer.Option(
        "--root",
        help="The project the recipe's files must be inside (default: the enclosing git "
        "repository, else the recipe's directory).",
        metavar="DIR",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]

"""The typer application every command registers on, and the one error-handling decorator:
a user's mistake or a failed build is one `baker: error:` line and its exit code (DESIGN.md,
CLI contract: 0 success, 1 failure, 2 bad input, 130 interrupted), never a traceback."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, ParamSpec, TypeVar

import typer
import typer.core
from rich.console import Console
from typer._click.core import Context

from baker.errors import BakerError

if TYPE_CHECKING:
    from baker.progress import Reporter

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
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


class _Command(typer.core.TyperCommand):
    """Help that reads as sentences: arguments and options are shown by a name (RECIPE,
    --pub PUB), never by their Python type (<list[Path]>, <str>)."""

    def get_params(self, ctx: Context) -> list[Any]:
        params = super().get_params(ctx)
        for param in params:
            if isinstance(param, typer.core.TyperArgument):
                param.metavar = param.metavar or str(param.name).upper()
                param.display_type_rich = lambda ctx: None  # type: ignore[method-assign]
            elif isinstance(param, typer.core.TyperOption) and not param.is_flag:
                param.metavar = param.metavar or str(param.name).upper()
        return params


def command(
    name: str | None = None, on: typer.Typer = app
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Register a guarded command on `on` (the main app by default)."""

    def register(fn: Callable[P, R]) -> Callable[P, R]:
        wrapped = guarded(fn)
        on.command(name, cls=_Command)(wrapped)
        return wrapped

    return register


def with_options(*fields: str) -> Callable[[Callable[..., R]], Callable[..., R]]:
    """Give a command the build options named (Options fields) as its command-line flags,
    from the one table baker.build.options.FLAGS, and hand them to it as `options`."""
    from baker.build.options import FLAGS, Options

    types = typing.get_type_hints(Options)
    defaults = {f.name: f.default for f in dataclasses.fields(Options)}
    flags = [f for f in FLAGS if f.field in fields]

    def wrap(fn: Callable[..., R]) -> Callable[..., R]:
        own = [p for p in inspect.signature(fn, eval_str=True).parameters.values()
               if p.name != "options"]  # fmt: skip
        added = [
            inspect.Parameter(
                f.field,
                inspect.Parameter.KEYWORD_ONLY,
                default=defaults[f.field],
                annotation=Annotated[
                    types[f.field],
                    typer.Option(
                        f.flag,
                        help=f.help,
                        metavar=f.metavar,
                        envvar=f.envvar,
                        show_default=not isinstance(defaults[f.field], bool)
                        and defaults[f.field] is not None,
                    ),
                ],
            )
            for f in flags
        ]

        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> R:
            values = {f.field: kwargs.pop(f.field) for f in flags if f.field in kwargs}
            return fn(*args, options=Options(**values), **kwargs)

        params = own + added
        run.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        run.__annotations__ = {p.name: p.annotation for p in params}
        return run

    return wrap


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

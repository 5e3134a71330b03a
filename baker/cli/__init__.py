"""The command line (DESIGN.md, CLI contract). Exit 0 success, 1 failure, 2 bad input, 130
interrupted; errors are one sentence on stderr, never a traceback for a user's mistake.

Each module registers its commands on baker.cli.app.app when imported: build (build,
validate, lock, rebuild), artifact (verify, inspect, diff, keygen), export (convert, export,
import), cloud (publish), cache (cache list, cache prune).
"""

from __future__ import annotations

import signal
import sys
from typing import NoReturn

import typer

# typer 0.29 vendors click: its usage errors (missing argument, unknown option) live here.
from typer._click.exceptions import UsageError

from baker import __version__
from baker.cli import artifact, build, cache, cloud, export  # noqa: F401  (they register)
from baker.cli.app import app, err


@app.command()
def version() -> None:
    """Print baker's version."""
    typer.echo(__version__)


def _on_signal(signum: int, _frame: object) -> NoReturn:
    # Raised at the point the build is at, so every cleanup on the way out still runs. A
    # KeyboardInterrupt, like Ctrl-C: libraries' `except Exception` (paramiko's, waiting on
    # a channel) would swallow or re-dress anything less and leave the build running.
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


def main() -> None:
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)
    try:
        code = app(standalone_mode=False)
    except UsageError as e:
        # One line, not click's framed box: what is wrong and where to look. (With no
        # arguments at all the help was shown, and is what there is to say.)
        if message := e.format_message().strip().rstrip("."):
            path = e.ctx.command_path if e.ctx else "baker"
            err.print(f"baker: error: {message[0].lower()}{message[1:]}; see `{path} --help`.",
                      markup=False, highlight=False, soft_wrap=True)  # fmt: skip
        sys.exit(2)
    except (KeyboardInterrupt, typer.Abort):
        err.print("baker: error: interrupted; cleaned up.")
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)

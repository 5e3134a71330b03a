"""The command line (DESIGN.md, CLI contract). Exit 0 success, 1 failure, 2 bad input, 130
interrupted; errors are one sentence on stderr, never a traceback for a user's mistake.

Each module registers its commands on baker.cli.shared.app when imported: build (build,
validate, lock, rebuild), artifact (verify, inspect, diff, keygen), export (convert, export,
import), cloud (publish), registry (push, pull, promote), nightly, farm (worker, submit),
cache (cache list, cache prune), clean, security (scan, vulndb fetch), lifecycle (revoke,
prune, revocations export).
"""

from __future__ import annotations

import re
import signal
import sys
from typing import Any, NoReturn

import typer
import typer.main

# typer 0.29 vendors click: its usage errors (missing argument, unknown option) live here.
from typer._click.exceptions import UsageError

from baker import __version__, interrupts
from baker.cli import (  # noqa: F401  (they register)
    artifact,
    build,
    cache,
    clean,
    cloud,
    export,
    farm,
    lifecycle,
    nightly,
    registry,
    security,
)
from baker.cli.shared import app, err

__all__ = ["app", "main"]


@app.command()
def version() -> None:
    """Print baker's version."""
    typer.echo(__version__)


def _on_signal(signum: int, _frame: object) -> NoReturn:
    # Raised at the point the build is at, so every cleanup on the way out still runs. A
    # KeyboardInterrupt, like Ctrl-C: libraries' `except Exception` (paramiko's, waiting on
    # a channel) would swallow or re-dress anything less and leave the build running.
    interrupts.note(signum)  # in case Python drops the exception (baker.interrupts)
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


def _unraisable(hook: Any) -> None:
    # A KeyboardInterrupt raised inside one of Python's own hooks (logging's at-fork lock
    # release, as a subprocess starts) is "ignored" with a traceback on stderr. The signal
    # was noted (baker.interrupts) and is acted on at the next check: say nothing here.
    if hook.exc_type is KeyboardInterrupt:
        return
    sys.__unraisablehook__(hook)


def _command_path(args: list[str]) -> str:
    """`baker cache prune` for `baker cache prune --max-size`: the (sub)commands named."""
    words, group = ["baker"], typer.main.get_command(app)
    for arg in args:
        commands = getattr(group, "commands", {})
        if arg not in commands:
            break
        words.append(arg)
        group = commands[arg]
    return " ".join(words)


_NOT_ONE_OF = re.compile(
    r"[Ii]nvalid value for '(?P<option>[^']+)': (?:Value error, )?'(?P<value>[^']*)' is not "
    r"one of (?P<choices>.*)"
)


def _in_words(message: str) -> str:
    """click's words for a usage error, said as baker says the rest: `--accel qemu: expected
    auto, kvm or tcg`, a guess in parentheses."""
    if m := _NOT_ONE_OF.fullmatch(message):
        words = [w.strip("' ") for w in m["choices"].split(",")]
        expected = ", ".join(words[:-1]) + f" or {words[-1]}" if len(words) > 1 else words[0]
        return f"{m['option']} {m['value']}: expected {expected}"
    message = message.replace(". Did you mean ", " (did you mean ")
    return message + (")" if "(did you mean " in message else "")


def main() -> None:
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)
    sys.unraisablehook = _unraisable
    try:
        code = app(standalone_mode=False)
    except UsageError as e:
        # One line, not click's framed box: what is wrong and where to look. (With no
        # arguments at all the help was shown, and is what there is to say.)
        if message := _in_words(e.format_message().strip().rstrip(".")):
            path = e.ctx.command_path if e.ctx else _command_path(sys.argv[1:])
            err.print(f"baker: error: {message[0].lower()}{message[1:]}; see `{path} --help`.",
                      markup=False, highlight=False, soft_wrap=True)  # fmt: skip
        sys.exit(2)
    except (KeyboardInterrupt, typer.Abort):
        err.print("baker: error: interrupted; cleaned up.")
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)

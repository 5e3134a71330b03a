"""`baker cache list | prune`: what the step cache holds, and keeping it bounded."""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated

import typer

from baker.cli.shared import JsonOpt, app, command
from baker.errors import InputError

cache_app = typer.Typer(no_args_is_help=True, help="The step cache: list and prune its entries.")
app.add_typer(cache_app, name="cache")

_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([KMGT]?)(i?B)?", re.I)
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    """`10G`, `500M`, `2.5GiB`, `1024` (bytes) as bytes."""
    m = _SIZE.fullmatch(text.strip())
    if not m:
        raise InputError(f"--max-size {text}: expected a size like 500M or 10G.")
    return int(float(m.group(1)) * _UNITS[m.group(2).upper()])


# What each step's entries hold, for people reading the list.
_HOLDS = {
    "base": "root tree",
    "disk": "base disk",
    "boot": "saved build machine",
    "image": "image",
    "measure": "boot measurement",
}


def _when(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%d %H:%M")


@command("list", on=cache_app)
def list_entries(as_json: JsonOpt = False) -> None:
    """List the step entries. Each with its step, key, size on disk, and when it was made and
    last used."""
    import json

    from baker.cache import Cache
    from baker.progress import human

    cache = Cache()
    entries = cache.entries()
    debs = list((cache.root / "debs").glob("*.deb")) if (cache.root / "debs").is_dir() else []
    if as_json:
        rows = [
            {"step": e.step, "holds": _HOLDS.get(e.step, e.step), "key": e.key,
             "size": e.size, "created": e.created, "last_used": _when(e.last_used),
             "path": str(e.path)}
            for e in entries
        ]  # fmt: skip
        typer.echo(json.dumps({"root": str(cache.root), "entries": rows}, indent=2))
        return
    typer.echo(f"{'STEP':<10} {'HOLDS':<20} {'KEY':<16} {'SIZE':>9}  {'CREATED':<25} LAST USED")
    for e in entries:
        typer.echo(
            f"{e.step:<10} {_HOLDS.get(e.step, e.step):<20} {e.key[:16]:<16} "
            f"{human(e.size):>9}  {e.created:<25} {_when(e.last_used)}"
        )
    total = sum(e.size for e in entries)
    deb_size = sum(d.stat().st_blocks * 512 for d in debs)
    typer.echo(
        f"{len(entries)} entries, {human(total)} in {cache.steps_dir}; "
        f"{len(debs)} package files, {human(deb_size)} in {cache.root / 'debs'}"
    )


@command("prune", on=cache_app)
def prune(
    older_than: Annotated[
        float | None,
        typer.Option(
            "--older-than", help="Remove entries unused for more than DAYS.", metavar="DAYS"
        ),
    ] = None,
    max_size: Annotated[
        str | None,
        typer.Option(
            "--max-size",
            help="Then remove the least recently used until the rest fit in SIZE (500M, 10G).",
            metavar="SIZE",
        ),
    ] = None,
) -> None:
    """Remove step entries by age or total size. Entries a running build uses are kept."""
    from baker.cache import Cache
    from baker.progress import human

    if older_than is None and max_size is None:
        raise InputError("give --older-than DAYS, --max-size SIZE, or both.")
    if older_than is not None and older_than < 0:
        raise InputError(f"--older-than {older_than:g}: expected a number of days, 0 or more.")
    limit = parse_size(max_size) if max_size is not None else None
    removed, busy = Cache().prune(older_than * 86400 if older_than is not None else None, limit)
    for e in removed:
        typer.echo(f"removed {e.step}/{e.key[:16]} ({human(e.size)})")
    for e in busy:
        typer.echo(f"kept {e.step}/{e.key[:16]}: a running build uses it")
    typer.echo(f"freed {human(sum(e.size for e in removed))} in {len(removed)} entries")

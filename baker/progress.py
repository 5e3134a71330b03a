"""Progress for long builds: a live display on a terminal, plain step lines in CI logs, and
every line in the build log; a byte meter for long copies (convert, export, import), and the
sizes and rates they report."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TextIO

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)


class Reporter:
    def __init__(self, console: Console | None = None, log: Path | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.live = self.console.is_terminal
        self._log: TextIO | None = None
        self._progress: Progress | None = None
        self._task = None
        self._secrets: tuple[str, ...] = ()
        if log:
            self.open_log(log)

    def open_log(self, path: Path) -> None:
        self._log = path.open("a", buffering=1)

    def close(self) -> None:
        if self._log:
            with contextlib.suppress(OSError):  # a full disk: the error says so, not this
                self._log.close()
            self._log = None

    def mask(self, secrets: Iterable[str]) -> None:
        """Print and log `***` wherever one of these values appears, from now on."""
        # A value printed line by line is masked a line at a time; the longest first, so a
        # value that holds another is masked whole.
        parts = {p for v in secrets for p in (v, *(x for x in v.splitlines() if len(x) >= 8))}
        self._secrets = tuple(sorted({*self._secrets, *parts}, key=len, reverse=True))

    def masked(self, text: str) -> str:
        for value in self._secrets:
            text = text.replace(value, "***")
        return text

    def _write_log(self, line: str) -> None:
        if self._log:
            # The log lives in the work directory: when its disk is full, the build's own
            # error says so; a failed log line must not take its place.
            with contextlib.suppress(OSError):
                self._log.write(f"{time.strftime('%H:%M:%S')} {self.masked(line)}\n")

    def info(self, message: str) -> None:
        message = self.masked(message)
        self._write_log(message)
        # Not wrapped: a CI log keeps each message on one line, for people and for grep.
        self.console.print(
            f"[bold]baker[/bold]: {escape(message)}", highlight=False, markup=True, soft_wrap=True
        )

    def output(self, source: str, line: str) -> None:
        """A line a step's tool or guest command printed: always logged, shown dimmed."""
        line = self.masked(line)
        self._write_log(f"[{source}] {line}")
        if self._progress is not None:
            self._progress.console.print(
                f"  [dim]{source}[/dim] │ {line}", markup=True, highlight=False, soft_wrap=True
            )
        else:
            self.console.print(
                f"  {source} | {line}", markup=False, highlight=False, soft_wrap=True
            )

    @contextlib.contextmanager
    def step(self, name: str, what: str) -> Iterator[None]:
        start = time.monotonic()
        self._write_log(f"==> {name}: {what}")
        if self.live:
            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("[bold]{task.description}"),
                TimeElapsedColumn(),
                console=self.console,
                transient=True,
            )
            self._progress.start()
            self._progress.add_task(f"{name}: {what}")
        else:
            self.console.print(
                f"baker: ==> {name}: {what}", markup=False, highlight=False, soft_wrap=True
            )
        ok = False
        try:
            yield
            ok = True
        finally:
            elapsed = time.monotonic() - start
            if self._progress is not None:
                self._progress.stop()
                self._progress = None
            mark = "done" if ok else "FAILED"
            self._write_log(f"<== {name}: {mark} in {elapsed:.1f} s")
            style = "green" if ok else "red"
            self.console.print(
                f"baker: [{style}]{mark}[/{style}] {name} ({elapsed:.1f} s)",
                highlight=False,
            )


class Meter:
    """A byte bar on a terminal; plain start and end lines otherwise (CI logs). Reporter.step
    holds a live display of its own, and rich allows one at a time, so this stands alone."""

    def __init__(self, reporter: Reporter, what: str, total: int, percent: bool = False) -> None:
        self.reporter = reporter
        self.what = what
        self.total = 100 if percent else total
        self.percent = percent
        self._progress: Progress | None = None
        self._task: Any = None
        self._started = 0.0

    def __enter__(self) -> Meter:
        self._started = time.monotonic()
        console = self.reporter.console
        if self.reporter.live:
            self._progress = Progress(*self._columns(), console=console, transient=True)
            self._progress.start()
            self._task = self._progress.add_task(self.what, total=self.total or None)
        else:
            console.print(f"baker: ==> {self.what}", markup=False, highlight=False, soft_wrap=True)
        return self

    def _columns(self) -> list[ProgressColumn]:
        name = TextColumn("[bold]{task.description}")
        if self.percent:
            return [
                name,
                BarColumn(),
                TextColumn("{task.percentage:>3.0f}%"),
                TimeRemainingColumn(),
            ]
        if self.total:
            amount = [DownloadColumn(binary_units=True), TransferSpeedColumn()]
            return [name, BarColumn(), *amount, TimeRemainingColumn()]
        return [SpinnerColumn(), name, TimeElapsedColumn()]  # no size to measure against

    def advance(self, n: int) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, n)

    def update(self, completed: float) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=completed)

    def __exit__(self, exc_type: object, *_: object) -> None:
        if self._progress is not None:
            self._progress.stop()
        mark = "done" if exc_type is None else "FAILED"
        elapsed = time.monotonic() - self._started
        self.reporter.console.print(
            f"baker: {mark} {self.what} ({elapsed:.1f} s)",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )


def human(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.2f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def rate(size: int, seconds: float) -> str:
    return f"{human(size / max(seconds, 1e-6))}/s"

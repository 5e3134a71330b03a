"""Progress for long builds: a live display on a terminal, plain step lines in CI logs, and
every line in the build log."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn


class Reporter:
    def __init__(self, console: Console | None = None, log: Path | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.live = self.console.is_terminal
        self.timings: dict[str, float] = {}
        self._log: TextIO | None = None
        self._progress: Progress | None = None
        self._task = None
        if log:
            self.open_log(log)

    def open_log(self, path: Path) -> None:
        self._log = path.open("a", buffering=1)

    def close(self) -> None:
        if self._log:
            self._log.close()
            self._log = None

    def _write_log(self, line: str) -> None:
        if self._log:
            self._log.write(f"{time.strftime('%H:%M:%S')} {line}\n")

    def info(self, message: str) -> None:
        self._write_log(message)
        self.console.print(f"[bold]baker[/bold]: {message}", highlight=False, markup=True)

    def output(self, source: str, line: str) -> None:
        """A line a step's tool or guest command printed: always logged, shown dimmed."""
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
            self.console.print(f"baker: ==> {name}: {what}", markup=False, highlight=False)
        ok = False
        try:
            yield
            ok = True
        finally:
            elapsed = time.monotonic() - start
            self.timings[name] = round(elapsed, 3)
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

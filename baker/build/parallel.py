"""`baker build A.yaml B.yaml … --jobs N`: several recipes baked at once on one host.

Each recipe is its own `baker build` process: its own ports, domain, work directory and
cleanup, and the shared step cache with its locks, exactly as when two builds are started by
hand. This runs them, N at a time, with every progress line prefixed by the recipe's name,
and ends with one line per build on stdout: NAME DIGEST, or NAME failed (exit CODE).

Interrupted (Ctrl-C, SIGTERM, SIGHUP), every running build is given SIGTERM and waited for,
so each removes its own machine and work directory before this exits.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from baker.errors import BuildError

# Waiting for an interrupted build to clean up: a machine to destroy, a work dir to remove.
STOP_WAIT_S = 120


@dataclass
class Job:
    name: str
    argv: list[str]
    proc: subprocess.Popen[bytes] | None = None
    code: int | None = None
    digest: str = ""
    started: float = 0.0
    seconds: float = 0.0
    _stdout: list[str] = field(default_factory=list)


def _pump(job: Job, stream: object, sink: Callable[[str], None], keep: bool) -> None:
    for raw in iter(stream.readline, b""):  # type: ignore[attr-defined]
        line = raw.decode(errors="replace").rstrip("\n")
        if keep:
            job._stdout.append(line)
        else:
            sink(f"[{job.name}] {line}")


def run_all(jobs: Sequence[Job], limit: int, say: Callable[[str], None]) -> list[Job]:
    """Run `jobs`, at most `limit` at once; returns them with their exit codes and digests."""
    waiting, running = list(jobs), list[Job]()
    pumps: list[threading.Thread] = []
    lock = threading.Lock()

    def sink(line: str) -> None:
        with lock:
            say(line)

    try:
        while waiting or running:
            while waiting and len(running) < limit:
                job = waiting.pop(0)
                job.started = time.monotonic()
                # A session of its own: a Ctrl-C at the terminal reaches this process only,
                # which stops each build once (a second signal would cut its cleanup short).
                job.proc = subprocess.Popen(job.argv, stdin=subprocess.DEVNULL,
                                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                            start_new_session=True)  # fmt: skip
                for stream, keep in ((job.proc.stdout, True), (job.proc.stderr, False)):
                    pump = threading.Thread(target=_pump, args=(job, stream, sink, keep))
                    pump.start()
                    pumps.append(pump)
                sink(f"[{job.name}] started")
                running.append(job)
            for job in list(running):
                assert job.proc is not None
                if job.proc.poll() is not None:
                    _finish(job)
                    running.remove(job)
                    outcome = f"done in {job.seconds:.0f} s" if job.code == 0 else (
                        f"failed (exit {job.code}) after {job.seconds:.0f} s")  # fmt: skip
                    sink(f"[{job.name}] {outcome}")
            time.sleep(0.1)
    except BaseException:
        _stop(running)
        raise
    finally:
        for pump in pumps:
            pump.join(5)
    return list(jobs)


def _finish(job: Job) -> None:
    assert job.proc is not None
    job.code = job.proc.wait()
    job.seconds = time.monotonic() - job.started
    if job.code == 0 and job._stdout:
        job.digest = job._stdout[-1].strip()


def _stop(running: list[Job]) -> None:
    for job in running:
        if job.proc is not None and job.proc.poll() is None:
            job.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_WAIT_S
    for job in running:
        if job.proc is None:
            continue
        try:
            job.proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            job.proc.kill()
            job.proc.wait()


def child_argv(recipe: Path, options: list[str]) -> list[str]:
    """The `baker build` of one recipe, with the options the whole call was given."""
    return [sys.executable, "-m", "baker", "build", str(recipe), *options]


def summary(jobs: Sequence[Job]) -> None:
    """Raises BuildError naming the failed builds, if any; otherwise returns."""
    failed = [j for j in jobs if j.code != 0]
    if failed:
        names = ", ".join(f"{j.name} (exit {j.code})" for j in failed)
        raise BuildError(f"{len(failed)} of {len(jobs)} builds failed: {names}; their own "
                         "lines above say why.")  # fmt: skip


def names_unique(names: Sequence[tuple[Path, str]]) -> str | None:
    """The first image name two recipes share (they would publish to one OUT/NAME)."""
    seen: dict[str, Path] = {}
    for path, name in names:
        if name in seen:
            return f"{seen[name]} and {path} both make the image {name!r}; give one another name."
        seen[name] = path
    return None

"""The build task a worker runs: lay the job out, `baker build` it, store the artifact.

A build that fails (a provisioner, a test, a budget, a bad recipe) is reported once with the
build's own error line, never retried: it would fail the same way. What fails around the
build (the artifact store, the registry) is retried, a bounded number of times.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from celery import shared_task  # type: ignore[import-untyped]
from celery.exceptions import Reject  # type: ignore[import-untyped]

from baker import leftovers
from baker.build.options import Options
from baker.build.options import argv as flags
from baker.farm import payload as payloads
from baker.farm import store


class BuildFailed(Exception):
    """The build itself failed; the message is its error line."""


class Interrupted(Exception):
    """The build was interrupted (the worker stopping): its job goes back to the queue."""


class StoreFailed(Exception):
    """The artifact could not be stored; worth another try."""


INTERRUPTED = 130  # baker's exit code for an interrupted command
PROGRESS = "PROGRESS"  # a job's state while its build runs: meta {worker, step, name}

# Storing is retried this many times, waiting RETRY_DELAY_S, then twice that, and so on.
STORE_RETRIES = 3
RETRY_DELAY_S = 5.0


@shared_task(name="baker.build", bind=True, acks_late=True)  # type: ignore[untyped-decorator]
def build(self: Any, job: dict[str, Any]) -> dict[str, Any]:
    hostname = self.request.hostname

    def at(step: str) -> None:
        # What `baker submit --wait` and `baker farm status` show: who builds it, and where.
        with contextlib.suppress(Exception):  # a report lost to the broker is not a failure
            self.update_state(state=PROGRESS, meta={"worker": hostname, "step": step,
                                                    "name": job.get("name")})  # fmt: skip

    try:
        return _build(job, hostname, at)
    except Interrupted:
        # Ctrl-C of a worker reaches its build too: the job is handed back, not failed.
        raise Reject("the build was interrupted; handed back", requeue=True) from None
    except StoreFailed as e:
        delay = RETRY_DELAY_S * 2**self.request.retries
        raise self.retry(exc=e, countdown=delay, max_retries=STORE_RETRIES) from None


def _build(job: dict[str, Any], hostname: str, at: Callable[[str], None]) -> dict[str, Any]:
    work = leftovers.work_root()
    with tempfile.TemporaryDirectory(prefix="baker-job-", dir=work) as tmp:
        # Provably this process's: a worker that restarts after this one was killed removes it.
        leftovers.write_owner(Path(tmp), leftovers.Owner.me())
        root = Path(tmp) / "project"
        recipe = payloads.lay_out(job, root)
        out = Path(tmp) / "out"
        parents = _parent(job, root, Path(tmp) / "parents")
        # The worker's signing key, if it has one, comes to the build through the environment.
        runs = job.get("boot_runs")
        options = Options(out=out, parents=parents, no_cache=bool(job.get("no_cache")),
                          boot_runs=int(runs) if runs is not None else None)  # fmt: skip
        argv = [
            sys.executable,
            "-m",
            "baker",
            "build",
            str(recipe),
            f"--root={root}",
            *(f"--var={k}={v}" for k, v in job["variables"].items()),
            *flags(options),
        ]
        at("starting")
        proc = run_build(argv, lambda line: _step(line, at))
        sys.stderr.write(proc.stderr[-20000:])
        if proc.returncode == INTERRUPTED:
            raise Interrupted(job["name"])
        if proc.returncode != 0:
            raise BuildFailed(_error_line(proc.stderr) or f"baker build exited {proc.returncode}")
        digest = proc.stdout.strip().splitlines()[-1]
        try:
            where = store.put(out / job["name"], job["name"], digest)
        except Exception as e:  # the store's own failure, said in one line
            raise StoreFailed(f"storing {job['name']}: {e}") from None
        shutil.rmtree(out, ignore_errors=True)
    return {"name": job["name"], "digest": digest, "stored": where, "worker": hostname}


def run_build(
    argv: list[str], on_line: Callable[[str], None] = lambda line: None
) -> subprocess.CompletedProcess[str]:
    """`baker build` in the worker's process group (a worker killed whole takes it along),
    each line of its progress handed to `on_line` as it comes."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out: list[str] = []
    reader = threading.Thread(target=lambda: out.append(proc.stdout.read()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    err: list[str] = []
    for line in proc.stderr:  # type: ignore[union-attr]
        err.append(line)
        on_line(line)
    code = proc.wait()
    reader.join()
    return subprocess.CompletedProcess(argv, code, "".join(out), "".join(err))


_STEP = re.compile(r"^(?:\[[^\]]+\] )?baker: ==> ([\w-]+)")


def _step(line: str, at: Callable[[str], None]) -> None:
    if m := _STEP.match(line):
        at(m.group(1))


def _parent(job: dict[str, Any], root: Path, into: Path) -> Path | None:
    """Where the build finds the parent its job names (`recipe:FILE`): taken from the farm's
    store, the very image the submitter named by digest."""
    parent = job.get("parent")
    if not parent:
        return None
    from baker.errors import InputError
    from baker.recipe.load import load

    try:
        spec = load(root / str(job["recipe"]), dict(job["variables"]), root)
        store.fetch(parent["name"], parent["digest"], into / parent["name"], spec.trust)
    except (InputError, store.NotStored) as e:
        raise BuildFailed(f"{e}: the farm builds a parent before its children") from None
    return into


def _error_line(stderr: str) -> str | None:
    for line in reversed(stderr.strip().splitlines()):
        if line.startswith("baker: error: "):
            return line.removeprefix("baker: error: ")
    return None

"""The build task a worker runs: lay the job out, `baker build` it, store the artifact.

A build that fails (a provisioner, a test, a budget, a bad recipe) is reported once with the
build's own error line, never retried: it would fail the same way. What fails around the
build (the artifact store, the registry) is retried, a bounded number of times.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from celery import shared_task  # type: ignore[import-untyped]

from baker import leftovers
from baker.build.options import Options
from baker.build.options import argv as flags
from baker.farm import payload as payloads
from baker.farm import store


class BuildFailed(Exception):
    """The build itself failed; the message is its error line."""


class StoreFailed(Exception):
    """The artifact could not be stored; worth another try."""


# Storing is retried this many times, waiting RETRY_DELAY_S, then twice that, and so on.
STORE_RETRIES = 3
RETRY_DELAY_S = 5.0


@shared_task(name="baker.build", bind=True, acks_late=True)  # type: ignore[untyped-decorator]
def build(self: Any, job: dict[str, Any]) -> dict[str, Any]:
    try:
        return _build(job, self.request.hostname)
    except StoreFailed as e:
        delay = RETRY_DELAY_S * 2**self.request.retries
        raise self.retry(exc=e, countdown=delay, max_retries=STORE_RETRIES) from None


def _build(job: dict[str, Any], hostname: str) -> dict[str, Any]:
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
        proc = run_build(argv)
        sys.stderr.write(proc.stderr[-20000:])
        if proc.returncode != 0:
            raise BuildFailed(_error_line(proc.stderr) or f"baker build exited {proc.returncode}")
        digest = proc.stdout.strip().splitlines()[-1]
        try:
            where = store.put(out / job["name"], job["name"], digest)
        except Exception as e:  # the store's own failure, said in one line
            raise StoreFailed(f"storing {job['name']}: {e}") from None
        shutil.rmtree(out, ignore_errors=True)
    return {"name": job["name"], "digest": digest, "stored": where, "worker": hostname}


def run_build(argv: list[str]) -> subprocess.CompletedProcess[str]:
    """`baker build` in the worker's process group: a worker killed whole takes it along."""
    return subprocess.run(argv, capture_output=True, text=True, check=False)


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

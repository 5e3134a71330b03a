"""Failures said the way a user needs them: a full disk named with how much the build needs,
a build machine that stopped, a lost SSH connection. The runner passes every step's failure
through `explain` before cleanups run, while what failed is still there to be looked at."""

from __future__ import annotations

import errno
import shutil
import time
from pathlib import Path

from baker.backends.base import Machine
from baker.build.state import BuildState, Context
from baker.edge.ssh import ConnectionLost
from baker.errors import BakerError, BuildError
from baker.progress import human

# A filesystem with less than this free when a write failed is the reason it failed.
_NEARLY_FULL = 64 << 20
_NO_SPACE = ("No space left on device", "Wrote only", "Disk quota exceeded", "ENOSPC")


def explain(
    error: BaseException, ctx: Context, state: BuildState, step: str, uses_machine: bool
) -> BaseException:
    """`error` as the one sentence that tells what happened, or `error` itself. A step that
    `uses_machine` may have failed because the machine stopped or its sshd went away."""
    if _out_of_space(error) and (full := _full_disk(ctx, step)) is not None:
        return full
    machine = state.machine
    if uses_machine and machine is not None and isinstance(error, BakerError):
        try:
            alive = _still_alive(machine, settle_s=5 if isinstance(error, ConnectionLost) else 0)
        except BakerError as gone:  # libvirtd went away, say
            return gone
        if not alive:
            return BuildError(
                f"the build machine stopped during the {step} step ({_clause(error)}); its "
                f"console ended with: {machine.console_tail()}"
            )
        if isinstance(error, ConnectionLost):
            return BuildError(
                f"{_clause(error)}: the build machine runs, but its sshd no longer answers "
                f"(the {step} step was under way)."
            )
    return error


def _still_alive(machine: Machine, settle_s: float) -> bool:
    """Whether the machine runs; a lost connection is often the machine going down, which
    the hypervisor notices a moment later: give it `settle_s` to."""
    deadline = time.monotonic() + settle_s
    while machine.alive():
        if time.monotonic() >= deadline:
            return True
        time.sleep(0.2)
    return False


def _clause(error: BaseException) -> str:
    return str(error).rstrip(".")


def _out_of_space(error: BaseException) -> bool:
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return any(s in str(error) for s in _NO_SPACE)


def _full_disk(ctx: Context, step: str) -> BuildError | None:
    size = ctx.spec.recipe.base.disk_size_mib << 20
    places = [
        # The work directory holds the root tree, the disks being made and their copies.
        ("work directory", ctx.work, 2 * size, "BAKER_WORK_DIR"),
        ("step cache", ctx.opts.cache.steps_root, 2 * size, "BAKER_CACHE_DIR"),
        ("output directory", ctx.opts.out, size // 2, "--out"),
    ]
    for what, path, need, moved_by in places:
        where = _existing(path)
        usage = shutil.disk_usage(where)
        if usage.free < _NEARLY_FULL:
            return BuildError(
                f"the filesystem of the {what} ({path}) is full: {human(usage.free)} free of "
                f"{human(usage.total)} when the {step} step failed; a build of this recipe "
                f"needs about {human(need)} there ({moved_by} picks another place)."
            )
    return None


def _existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists():
        path = path.parent
    return path

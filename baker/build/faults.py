"""Failures said the way a user needs them: a full disk named by its mount point with how much
the step or the build needs there, a build machine that stopped, a lost SSH connection. The
runner passes every step's failure through `explain` before cleanups run, while what failed
is still there to be looked at."""

from __future__ import annotations

import errno
import os
import tempfile
import time
from pathlib import Path

from baker.backends.base import Machine
from baker.build.state import BuildState, Context
from baker.edge import tools
from baker.edge.ssh import ConnectionLost
from baker.errors import BakerError, BuildError, DiskFull, InputError
from baker.progress import human


def explain(
    error: BaseException,
    ctx: Context,
    state: BuildState,
    step: str,
    uses_machine: bool,
    writing: tuple[Path, int] | None = None,
) -> BaseException:
    """`error` as the one sentence that tells what happened, or `error` itself. A step that
    `uses_machine` may have failed because the machine stopped or its sshd went away;
    `writing` is what the step was writing when it failed, where it knows: (where, bytes)."""
    if (full := _disk_full(error, ctx, state, step, writing)) is not None:
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


def _disk_full(
    error: BaseException,
    ctx: Context,
    state: BuildState,
    step: str,
    writing: tuple[Path, int] | None,
) -> DiskFull | None:
    """`error` as a full disk, if that is what it was: a tool's (tools.run looked when it
    stopped), one of baker's own writes (ENOSPC, EDQUOT), or any other failure of the build
    while a place it writes to has (nearly) nothing left: a guest whose disk overlay could not
    grow, say."""
    places = [path for _, path, _, _ in _places(ctx)]
    if isinstance(error, DiskFull):
        found: tools.Space | None = tools.Space(error.mount, error.free, error.total)
        said = error.said
    elif isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        # A copy names its source and then its target (shutil); a write to an open file
        # names none: then it was one of the build's places.
        named = [Path(os.fsdecode(f)) for f in (error.filename, error.filename2) if f]
        found, said = tools.fullest(named or places), _said(error)
    elif isinstance(error, BakerError) and not isinstance(error, InputError):
        # Any failure while the work directory (the machine's disk overlay grows there) is
        # full, or one that says so while another place the build writes is; never the words
        # alone: a guest's "No space left on device" is the image's own disk, too small for
        # what the recipe installs.
        said = str(error).rstrip(".")
        found = tools.fullest(places[:3] if tools.out_of_space(said) else [ctx.work])
        if found is None or not found.nearly_full:
            return None
    else:
        return None
    if found is None:
        return None
    return tools.disk_full(found, said, step, _need(ctx, state, step, found, writing))


def _said(error: OSError) -> str:
    """The error as Python says it, without the `[Errno 28]` and the quotes."""
    named = [os.fsdecode(f) for f in (error.filename, error.filename2) if f]
    what = error.strerror or str(error)
    return f"{what}: {' -> '.join(named)}" if named else what


def _places(ctx: Context) -> list[tuple[str, Path, int | None, str]]:
    """Where a build writes: (what, path, about how many bytes, what picks another place)."""
    # A build that makes its disk here holds the root tree, the disks being made and their
    # copies; one in a cloud keeps little here, and how little is not known.
    local = ctx.backend.starts_from == "debian" or ctx.backend.hands_back == "disk"
    size = ctx.spec.recipe.base.disk_size_mib << 20 if local else None
    half = size // 2 if size else None
    return [
        ("the work directory", ctx.work, 2 * size if size else None, "BAKER_WORK_DIR"),
        ("the step cache", ctx.opts.cache.steps_root, 2 * size if size else None,
         "BAKER_CACHE_DIR"),
        ("the output directory", ctx.opts.out, half, "--out"),
        ("the temporary directory", Path(tempfile.gettempdir()), None, "TMPDIR"),
    ]  # fmt: skip


def _need(
    ctx: Context,
    state: BuildState,
    step: str,
    found: tools.Space,
    writing: tuple[Path, int] | None,
) -> str:
    """What goes on `found`, as a clause: what the step was writing where it knows (an output
    stored in the cache, the artifact published), else about what a build of the recipe
    needs on it, and what moves it elsewhere. Empty when none of it is known."""
    if writing is not None and _on(writing[0], found):
        return f"the {step} step's output needs {human(writing[1])} there{_moved(ctx, found)}"
    if step == "publish" and _on(ctx.opts.out, found):
        # Files already on that file system are moved, not copied.
        size = sum(p.stat().st_size for p in state.files.values()
                   if p.exists() and not _on(p, found))  # fmt: skip
        return f"the artifact needs {human(size)} there (--out picks another place)"
    on = [(what, need) for what, path, need, _ in _places(ctx) if need and _on(path, found)]
    if not on:
        moved = _moved(ctx, found)
        return moved.strip(" ()") if moved else ""
    where = " and ".join(what for what, _ in on)
    total = human(sum(need for _, need in on))
    return f"a build of this recipe needs about {total} there for {where}{_moved(ctx, found)}"


def _moved(ctx: Context, found: tools.Space) -> str:
    """What moves the places the build keeps on `found` elsewhere, as a parenthesis."""
    knobs = [knob for _, path, _, knob in _places(ctx) if _on(path, found)]
    if not knobs:
        return ""
    return f" ({' or '.join(knobs)} {'picks' if len(knobs) == 1 else 'pick'} another place)"


def _on(path: Path, found: tools.Space) -> bool:
    here = tools.space(path)
    return here is not None and here.mount == found.mount

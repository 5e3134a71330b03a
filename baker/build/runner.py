"""The step runner: runs a build's steps in order, owns the step cache, times every step and
unwinds cleanups.

The models are Packer's multistep (each step runs and registers the cleanups of what it made;
they run in reverse, for exactly the steps that ran, whether the build succeeds or fails) and
osbuild (a step's key is the hash of its inputs and of the key before it, and the runner, not
the steps, looks keys up in the cache). Before anything runs, the runner finds the furthest
step whose cached output is there and sound: the steps before it are not needed at all, and
that step's output is restored instead of made. After it, a cacheable step that runs has its
output stored, and every step's outcome (ran, reused, skipped) lands in the build state.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from baker import interrupts
from baker.build import faults, keep
from baker.build.options import Failure
from baker.build.state import BuildState, Carried, Context, StepOutcome
from baker.cache import Entry
from baker.errors import BakerError
from baker.hashing import code_digest


@dataclass(frozen=True)
class Saved:
    """What a cacheable step stores: files (moved into the cache), metadata, and the sha256
    hex digests of files it already computed (so nothing is hashed twice)."""

    files: Mapping[str, Path]
    meta: dict[str, Any] = field(default_factory=dict)
    known: Mapping[str, str] = field(default_factory=dict)


class Step:
    """One step of a build. Subclasses set `name` and implement `describe` and `run`; a
    cacheable one (`cached = True`) also implements `save` and `load`."""

    name: ClassVar[str]
    # The step's output is stored under its key and restored from there.
    cached: ClassVar[bool] = False
    # The key is known from the spec alone, before anything runs (not from what runs).
    static: ClassVar[bool] = True
    # Runs even when a later step's cached output makes the steps before it unneeded: it is
    # cheap, and the state needs what it finds (a cloud base image's pin, say).
    always: ClassVar[bool] = False
    # A failure here may leave the build machine running for a look (--on-error keep|ask),
    # and running the step again on it makes sense.
    keepable: ClassVar[bool] = False
    # Works on the running build machine: a failure may be the machine's (it stopped).
    uses_machine: ClassVar[bool] = False
    # Its cached output stands for the steps before it: the entry carries what they found
    # (the base, the tests and their results, the packages), restored when it is reused.
    carries: ClassVar[bool] = False
    # Its cached output is a layer over the previous step's (a saved machine over its disk):
    # it can be reused only together with that one.
    extends: ClassVar[bool] = False
    # The code that decides the step's output besides its own module: baker modules (their
    # imports followed) and data directories (baker.hashing.code_digest).
    code: ClassVar[tuple[str, ...]] = ()

    def code_digest(self) -> str:
        """The hash of the step's own module and of `code`: part of its key."""
        return code_digest(type(self).__module__, *self.code)

    def describe(self, ctx: Context) -> str:
        """What the step does, for the progress line."""
        raise NotImplementedError

    def key(self, ctx: Context, state: BuildState, previous: str | None) -> str | None:
        """The step's content key (its inputs and `previous`), or None if it has none."""
        return None

    def cache_key(self, ctx: Context, key: str) -> str:
        """What the step's output is stored under: its content key, unless the output depends
        on more than what the steps after it do (a saved machine on the accelerator and the
        QEMU that ran it, which the image does not)."""
        return key

    def run(self, ctx: Context, state: BuildState, cleanup: contextlib.ExitStack) -> None:
        """Do the step's work; register on `cleanup` whatever must be undone."""
        raise NotImplementedError

    def save(self, ctx: Context, state: BuildState) -> Saved:
        """After `run`: what to store under the step's key."""
        raise NotImplementedError

    def load(
        self, ctx: Context, state: BuildState, entry: Entry, cleanup: contextlib.ExitStack
    ) -> None:
        """Fill the state from a cache entry (a reused one, or the one `save` just stored);
        register on `cleanup` whatever that makes (a machine resumed from a saved one)."""
        raise NotImplementedError

    def usable(self, ctx: Context, entry: Entry) -> bool:
        """Whether a sound cache entry can still be used (a cloud image may be gone)."""
        return True


def run(steps: Sequence[Step], ctx: Context, state: BuildState) -> None:
    """Run `steps`; when this returns or raises, every registered cleanup has run."""
    use_cache = not ctx.opts.no_cache
    keys = static_keys(steps, ctx, state)
    report = ctx.reporter
    with contextlib.ExitStack() as cleanup:
        resumed = _furthest_cached(steps, keys, ctx, cleanup) if use_cache else {}
        first = min(resumed, default=-1)
        if resumed and first > 0:
            skipped = ", ".join(s.name for s in steps[:first] if not s.always)
            report.info(f"{steps[max(resumed)].name} is cached: {skipped} not needed")
        previous: str | None = None
        for i, step in enumerate(steps):
            interrupts.check()
            key = keys[step.name] if step.name in keys else step.key(ctx, state, previous)
            if key is not None:
                previous = key
            if i < first and not step.always:
                state.outcomes[step.name] = StepOutcome(key, "skipped", None)
                continue
            started = time.monotonic()
            found = resumed.get(i)
            if found is None and step.cached and key and use_cache and not step.static:
                found = ctx.opts.cache.lookup(step.name, step.cache_key(ctx, key), report.info)
                if found is not None:
                    cleanup.callback(found.release)
                    if not step.usable(ctx, found):
                        found.release()
                        ctx.opts.cache.drop(step.name, found.key)
                        found = None
            if found is not None:
                _load(step, ctx, state, found, cleanup)
                seconds = round(time.monotonic() - started, 3)
                report.info(f"reused {step.name} from the cache ({found.key[:12]}, {seconds} s)")
                state.outcomes[step.name] = StepOutcome(key, "reused", seconds)
                continue
            with report.step(step.name, step.describe(ctx)):
                _run_step(step, ctx, state, cleanup)
                if step.cached and key:
                    _store(step, ctx, state, key, cleanup)
            seconds = round(time.monotonic() - started, 3)
            state.outcomes[step.name] = StepOutcome(key, "ran", seconds)


def _store(
    step: Step, ctx: Context, state: BuildState, key: str, cleanup: contextlib.ExitStack
) -> None:
    """Store what `step` made under its key and load it from there. Storing copies it when
    the cache is on another file system than the work directory: a full one is said like a
    failure of the step, with how much its output needs."""
    saved = step.save(ctx, state)
    files, meta = dict(saved.files), dict(saved.meta)
    if step.carries:
        meta["carried"], carried = Carried.of(state, ctx.work)
        files.update(carried)
    # Measured now: a failed store has moved some of the files already, and removed them.
    size = sum(path.stat().st_size for path in files.values() if path.exists())
    try:
        stored = ctx.opts.cache.store(step.name, step.cache_key(ctx, key), files, meta, saved.known)
    except (BakerError, OSError) as e:
        writing = (ctx.opts.cache.steps_root, size)
        raise faults.explain(e, ctx, state, step.name, False, writing) from None
    cleanup.callback(stored.release)
    _load(step, ctx, state, stored, cleanup)


def _load(
    step: Step, ctx: Context, state: BuildState, entry: Entry, cleanup: contextlib.ExitStack
) -> None:
    """Put `entry` in place of running `step`; loading can fail as running does (resuming a
    saved machine copies its disk into the work directory), and is explained the same way."""
    if step.carries:
        Carried.restore(state, entry)
    try:
        step.load(ctx, state, entry, cleanup)
    except (BakerError, OSError) as e:
        raise faults.explain(e, ctx, state, step.name, step.uses_machine) from None


def _run_step(step: Step, ctx: Context, state: BuildState, cleanup: contextlib.ExitStack) -> None:
    """Run `step`; a failure is explained (a full disk, a machine that stopped) and, for a
    provisioner or a test, handled as --on-error says: abort, keep the machine, or ask."""
    while True:
        try:
            step.run(ctx, state, cleanup)
            return
        except (BakerError, OSError) as e:
            error = faults.explain(e, ctx, state, step.name, step.uses_machine)
            policy = ctx.opts.on_error
            if not (step.keepable and state.machine is not None) or policy == "abort":
                raise error from None
            if not isinstance(error, BakerError):
                raise error from None
            choice = "keep"
            if policy == "ask" and ctx.opts.decide is not None:
                failure = Failure(step.name, str(error), keep.ssh_command(ctx, state) or "")
                choice = ctx.opts.decide(failure)
            if choice == "retry":
                ctx.reporter.info(f"running the {step.name} step again on the same machine")
                continue
            if choice == "keep":
                keep.keep(ctx, state, cleanup, error)
            raise error from None


def static_keys(steps: Sequence[Step], ctx: Context, state: BuildState) -> dict[str, str | None]:
    """The keys of the leading steps whose keys the spec alone decides."""
    keys: dict[str, str | None] = {}
    previous: str | None = None
    for step in steps:
        if not step.static:
            break
        key = step.key(ctx, state, previous)
        keys[step.name] = key
        if key is not None:
            previous = key
    return keys


def _furthest_cached(
    steps: Sequence[Step],
    keys: Mapping[str, str | None],
    ctx: Context,
    cleanup: contextlib.ExitStack,
) -> dict[int, Entry]:
    """The furthest step whose cached output is there, sound and usable, with the outputs it
    extends (index -> entry, each held until the build ends); empty when there is none."""
    for i in reversed(range(len(keys))):
        held: dict[int, Entry] = {}
        complete = False
        j = i
        while (entry := _sound_entry(steps[j], keys[steps[j].name], ctx)) is not None:
            held[j] = entry
            # What an output extends is the previous step's: one that keeps none (a cloud's
            # base image, resolved every time) is no part of it.
            if not steps[j].extends or j == 0 or not steps[j - 1].cached:
                complete = True
                break
            j -= 1
        if complete:
            for entry in held.values():
                cleanup.callback(entry.release)
            return held
        for entry in held.values():
            entry.release()
    return {}


def _sound_entry(step: Step, key: str | None, ctx: Context) -> Entry | None:
    if not (step.cached and key):
        return None
    entry = ctx.opts.cache.lookup(step.name, step.cache_key(ctx, key), ctx.reporter.info)
    if entry is None:
        return None
    if step.usable(ctx, entry):
        return entry
    entry.release()
    ctx.opts.cache.drop(step.name, entry.key)
    return None

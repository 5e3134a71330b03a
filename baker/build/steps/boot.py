"""The boot step: a throwaway build machine started by the backend from the base, and a root
session on it the moment it answers.

Where the backend can save a running machine (`Resumes`), the first build from a base boots it
cold, saves it the moment it answers, and keeps that saved machine in the step cache beside
the base's disk; every later build from that base resumes it instead of booting (about a
second against a cold boot's twenty under emulation). A resumed machine must not be the saved
one again: it gets its own port and overlay from the backend, and before anything else runs
its clock is set from the host and its kernel's random generator reseeded with fresh bytes
from the host (and, where the kernel has the driver, from a new VM generation id).
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import time
from typing import Any

from baker.backends.base import BuildLabel, Guest, Resumes
from baker.build.runner import Saved, Step
from baker.build.state import BuildState, Context
from baker.cache import Entry
from baker.edge.ssh import BuildKeys
from baker.errors import BuildError
from baker.hashing import code_digest, content_key

SAVED = "saved"  # the work directory's subdirectory a machine is saved into
KEYS = "keys.json"  # the saved machine's access and host keys (0600: root's login to it)
# Right after a resume, as one command: the host's random bytes (its standard input) mixed
# into the kernel's pool and the generator reseeded from it at once (RNDRESEEDCRNG; perl is
# in every Debian), then the clock set to the host's.
_RESEED = (
    'perl -e \'open(my $r, ">", "/dev/urandom") or die "urandom: $!"; binmode STDIN; '
    'read(STDIN, my $b, 64) == 64 or die "no entropy"; print $r $b; close $r; '
    'open($r, "<", "/dev/urandom") or die; ioctl($r, 0x5207, 0) or die "reseed: $!";\''
)


def _key_config(ctx: Context, step: Step) -> dict[str, Any]:
    return {
        "backend": ctx.backend.key_config(),
        # The virtual hardware the provisioners run on is the backend's code's to say.
        "code": code_digest(
            type(step).__module__, type(ctx.backend).__module__, "templates/domain.xml.j2"
        ),
    }


def _label(state: BuildState) -> BuildLabel:
    # The keys of every step are known by now: the machine is tagged with them.
    keys = {name: o.key for name, o in state.outcomes.items() if o.key}
    return BuildLabel(state.label.recipe, state.label.build_id, keys)


class Boot(Step):
    """The boot step of a backend that cannot save a machine (or of a build that would throw
    the saved one away): a machine booted for this build alone. `settle`: its boot finishes
    and its timers stop before anything runs, as a saved machine's did (a local machine, whose
    provisioners must find what they would find on a resumed one)."""

    name = "boot"

    def __init__(self, settle: bool = False) -> None:
        self.settle = settle

    def describe(self, ctx: Context) -> str:
        return f"build machine ({ctx.backend.kind}, {ctx.accel}), waiting for SSH"

    def key(self, ctx: Context, state: BuildState, previous: str | None) -> str:
        return content_key("boot", _key_config(ctx, self), previous)

    def run(self, ctx: Context, state: BuildState, cleanup: contextlib.ExitStack) -> None:
        state.label = _label(state)
        state.access = BuildKeys.generate()
        start_from = state.start_from
        if start_from is None:
            raise RuntimeError("the pipeline reached the boot step without a base to boot")
        machine = ctx.backend.start(start_from, state.access, ctx.work, state.label)
        cleanup.callback(machine.destroy)
        state.machine = machine
        state.guest = machine.connect(ctx.spec.recipe.backend.ssh_timeout_s)
        cleanup.callback(state.guest.close)
        if self.settle:
            _quiesce(state.guest)


class ResumeOrBoot(Step):
    """The boot step of a backend that can save a running machine: `run` boots one cold and
    saves it (the runner keeps it in the cache), `load` resumes it, for this build and
    every later one from the same base."""

    name = "boot"
    cached = True
    extends = True  # the saved machine's disk is a layer over the base disk
    carries = True

    def describe(self, ctx: Context) -> str:
        return f"build machine ({ctx.backend.kind}, {ctx.accel}): boot, save, resume"

    def key(self, ctx: Context, state: BuildState, previous: str | None) -> str:
        return content_key("boot", _key_config(ctx, self), previous)

    def cache_key(self, ctx: Context, key: str) -> str:
        # A saved machine runs only where it was made: the same memory, vCPUs, machine,
        # firmware, accelerator and hypervisor. None of that changes what is built on it.
        return content_key("saved-machine", _resumes(ctx).saved_config(), key)

    def run(self, ctx: Context, state: BuildState, cleanup: contextlib.ExitStack) -> None:
        backend = _resumes(ctx)
        state.label = _label(state)
        keys = BuildKeys.generate()
        base = state.start_from
        if base is None:
            raise RuntimeError("the pipeline reached the boot step without a base to boot")
        cold, saved = ctx.work / "cold", ctx.work / SAVED
        cold.mkdir(mode=0o711)
        saved.mkdir()
        with contextlib.ExitStack() as booted:
            machine = backend.start(base, keys, cold, state.label)
            booted.callback(machine.destroy)
            guest = machine.connect(ctx.spec.recipe.backend.ssh_timeout_s)
            with contextlib.closing(guest):
                _quiesce(guest)
            started = time.monotonic()
            backend.save(machine, saved)
            ctx.reporter.info(f"saved the booted machine in {time.monotonic() - started:.1f} s")
        (saved / KEYS).touch(mode=0o600)
        (saved / KEYS).write_text(json.dumps(keys.as_dict()))

    def save(self, ctx: Context, state: BuildState) -> Saved:
        return Saved({f.name: f for f in sorted((ctx.work / SAVED).iterdir())})

    def load(
        self, ctx: Context, state: BuildState, entry: Entry, cleanup: contextlib.ExitStack
    ) -> None:
        backend = _resumes(ctx)
        base = state.start_from
        if base is None:
            raise RuntimeError("the pipeline reached the boot step without a base to boot")
        state.label = _label(state)
        state.access = BuildKeys.from_dict(json.loads(entry.file(KEYS).read_text()))
        started = time.monotonic()
        machine = backend.resume(entry.path, base, state.access, ctx.work, state.label)
        cleanup.callback(machine.destroy)
        state.machine = machine
        state.guest = machine.connect(ctx.spec.recipe.backend.ssh_timeout_s)
        cleanup.callback(state.guest.close)
        fresh(state.guest)
        ctx.reporter.info(
            f"resumed the saved build machine: SSH after {time.monotonic() - started:.1f} s"
        )


# Before a machine is saved: its boot finished, and its timers stopped (for this run only;
# the image keeps them as they are). baker's own bases and parents hold every timer from the
# first boot on (a drop-in, baker/guest/rootfs/etc/systemd/system/timer.d); a vendor's image
# booted as it is has no such drop-in, and a daily job there would fire the moment a resumed
# machine's clock jumps to today, writing into an image that must not depend on the day.
_QUIESCE = "systemctl is-system-running --wait >/dev/null; systemctl stop '*.timer'"


def _quiesce(guest: Guest) -> None:
    code, tail = guest.run(f"sh -c {shlex.quote(_QUIESCE)}", lambda _l: None, 300)
    if code != 0:
        last = " | ".join(tail[-3:]) or f"exit {code}"
        raise BuildError(f"could not settle the build machine before saving it: {last}")


def fresh(guest: Guest) -> None:
    """A resumed machine's own clock and random state, before anything else runs on it."""
    command = f"{_RESEED} && date -u -s @{time.time():.3f} >/dev/null"
    code, tail = guest.run(f"sh -c {shlex.quote(command)}", lambda _l: None, 60, os.urandom(64))
    if code != 0:
        last = " | ".join(tail[-3:]) or f"exit {code}"
        raise BuildError(f"could not set the resumed machine's clock and random state: {last}")


def _resumes(ctx: Context) -> Resumes:
    if not isinstance(ctx.backend, Resumes):
        raise RuntimeError(f"the {ctx.backend.kind} backend cannot save a machine")
    return ctx.backend

"""`--on-error keep`: a failed provisioner or test leaves the build machine running for a
look, with the way in (a key and the pinned host key in the kept work directory) and the way
out (`baker clean`) said in the error."""

from __future__ import annotations

import contextlib
import shlex
from typing import NoReturn

from baker import leftovers
from baker.backends.base import SshTarget
from baker.build.state import BuildState, Context, need
from baker.errors import BakerError, BuildError

KEY_FILE = "ssh-key"
KNOWN_HOSTS = "known_hosts"


def ssh_command(ctx: Context, state: BuildState) -> str | None:
    """The command that logs in to the machine as root, its host key checked (None for a
    machine reached otherwise); writes the key and known_hosts files into the work directory
    the first time."""
    target = need(state.machine, "the build machine").test_target()
    if not isinstance(target, SshTarget):
        return None
    key, known = ctx.work / KEY_FILE, ctx.work / KNOWN_HOSTS
    if not key.exists():
        target.keys.write_client_key(key)
        host = target.endpoint.host
        name = host if target.endpoint.port == 22 else f"[{host}]:{target.endpoint.port}"
        known.write_text(f"{name} {target.keys.host_public}\n")
    return shlex.join([
        "ssh", "-i", str(key), "-p", str(target.endpoint.port),
        "-o", f"UserKnownHostsFile={known}", "-o", "StrictHostKeyChecking=yes",
        f"{target.user}@{target.endpoint.host}",
    ])  # fmt: skip


def keep(
    ctx: Context, state: BuildState, cleanup: contextlib.ExitStack, error: BakerError
) -> NoReturn:
    """Leave the machine and the work directory as they are and fail with the way in."""
    command = ssh_command(ctx, state)
    machine = need(state.machine, "the build machine")
    way_in = f"log in with `{command}`" if command else f"it is {machine.name}"
    # None of the cleanups run: they would stop the machine and remove its disk. What they
    # hold besides (cache locks, the session) goes when this process exits.
    cleanup.pop_all()
    leftovers.write_owner(ctx.work, leftovers.Owner.me(kept=True), machine=machine.name)
    ctx.reporter.info(f"the build machine {machine.name} is kept ({ctx.work}); {way_in}")
    ctx.reporter.info("`baker clean` stops it and removes its work directory")
    raise BuildError(
        f"{str(error).rstrip('.')}; the machine is kept: {way_in}, and end it with `baker clean`."
    )

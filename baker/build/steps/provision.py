"""The provision step: the recipe's provisioners, in order, in a root session on the build
machine; each one's output streamed and logged, a failure named with its last lines. A child
image's own packages (base.packages on a parent) go first: resolved and fetched on the host
(baker.image.child_packages; the machine has no network), sent over the session, installed
with dpkg."""

from __future__ import annotations

import contextlib
import shlex
from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath

from baker.backends.base import Guest
from baker.build.runner import Step
from baker.build.state import BuildState, Context, need
from baker.edge import ssh
from baker.edge.ssh import ConnectionLost
from baker.errors import BuildError, InputError
from baker.hashing import content_key, sha256_file
from baker.image import apt, child_packages
from baker.progress import Reporter
from baker.recipe.spec import ShellFile, ShellInline, Spec

STAGING = "/run/baker/steps"  # a tmpfs: nothing a step uploads for itself reaches the image


def describe(spec: Spec) -> list[dict[str, object]]:
    """What decides this step's output, for its content key and build.json."""
    out: list[dict[str, object]] = []
    for i, step in enumerate(spec.recipe.provisioners):
        entry: dict[str, object] = {"name": spec.step_name(i, step)}
        entry.update(step.model_dump(exclude_none=True))
        out.append(entry)
    return out


class Provision(Step):
    name = "provision"
    keepable = True
    uses_machine = True

    def describe(self, ctx: Context) -> str:
        own = len(own_packages(ctx.spec))
        extra = f", after {own} packages of its own" if own else ""
        return f"{len(ctx.spec.recipe.provisioners)} provisioners over SSH{extra}"

    def key(self, ctx: Context, state: BuildState, previous: str | None) -> str:
        config = {
            "packages": list(own_packages(ctx.spec)),
            # A locked child installs the lock's files, whatever the mirror serves today: the
            # files, not the lock's bytes (which also pin a tag), decide what is installed.
            "locked": sorted(p.sha256 for p in ctx.locked.packages)
            if ctx.locked and own_packages(ctx.spec)
            else None,
            "provisioners": describe(ctx.spec),
            "source_date_epoch": ctx.source_date_epoch,
            "code": self.code_digest(),
        }
        return content_key("provision", config, previous)

    def run(self, ctx: Context, state: BuildState, cleanup: contextlib.ExitStack) -> None:
        if own_packages(ctx.spec) and not state.own_packages:
            install_own(ctx, need(state.guest, "a session"))
            state.own_packages = True
        # Run again after a failure (--on-error ask), it picks up at the provisioner that
        # failed: the ones before it did their work on this machine already.
        state.provisioned = run_all(
            ctx.spec,
            need(state.guest, "a session"),
            ctx.reporter,
            ctx.source_date_epoch,
            start=state.provisioned,
            done=lambda n: setattr(state, "provisioned", n),
            secret_values=ctx.secrets,
        )


def own_packages(spec: Spec) -> tuple[str, ...]:
    """A child's base.packages (a base made from packages installs its own with mmdebstrap)."""
    base = spec.recipe.base
    return base.packages if base.image is not None else ()


def install_own(ctx: Context, guest: Guest) -> None:
    """The child's packages: the lock's, or resolved on the host against the machine's dpkg
    database; fetched into the package cache, sent over the session, installed with dpkg."""
    on_line = _shown(ctx.reporter, "packages")
    if ctx.locked is not None:  # exactly the files the lock pins
        debs = child_packages.fetch_locked(ctx.spec.recipe.base, ctx.locked, ctx.opts.cache,
                                            on_line)  # fmt: skip
    else:
        status = guest.read("/var/lib/dpkg/status").decode(errors="replace")
        try:
            debs = child_packages.resolve(ctx.spec.recipe.base, status, ctx.opts.cache,
                                          ctx.work, on_line)  # fmt: skip
        except apt.UnknownPackage as e:
            raise InputError(f"{ctx.spec.where(e.field)}: {e}") from None
    if not debs:
        ctx.reporter.info("packages of its own: all already in the parent image")
        return
    ctx.reporter.info(f"packages of its own: {', '.join(f'{d.name} {d.version}' for d in debs)}")
    staged = f"{STAGING}/debs"
    code, _ = guest.run(f"mkdir -p {staged}", on_line, 60)
    if code != 0:
        raise BuildError(f"could not make {staged} on the build machine.")
    for deb in debs:
        cached = need(ctx.opts.cache.deb(deb.sha256), f"{deb.name} in the package cache")
        if sha256_file(cached) != deb.sha256:  # the cache is a hint: checked at the moment of use
            raise BuildError(f"the cached {deb.name} {deb.version} is corrupt ({cached}).")
        guest.upload(cached, f"{staged}/{Path(deb.path).name}", 0o644)  # streamed
    env = {"DEBIAN_FRONTEND": "noninteractive", "SOURCE_DATE_EPOCH": str(ctx.source_date_epoch)}
    install = f"env {ssh.env_prefix(env)} dpkg -i {staged}/*.deb && rm -rf {staged}"
    code, tail = guest.run(f"sh -c {shlex.quote(install)}", on_line, 1800)
    if code != 0:
        last = " | ".join(line for line in tail[-8:] if line.strip()) or "no output"
        raise BuildError(f"installing the packages of its own failed (exit {code}): {last}")


def run_all(
    spec: Spec,
    guest: Guest,
    reporter: Reporter,
    source_date_epoch: int,
    start: int = 0,
    done: Callable[[int], None] = lambda _n: None,
    secret_values: Mapping[str, str] | None = None,
) -> int:
    """Run the provisioners from number `start` on; `done(n)` after each; returns how many
    have run. Each is one command on the machine, its file sent as that command's input:
    one round trip, where an upload and a run took several (and an SFTP server's start)."""
    steps = spec.recipe.provisioners
    for i, step in enumerate(steps):
        if i < start:
            continue
        name = spec.step_name(i, step)
        reporter.info(f"provisioner {i + 1}/{len(steps)}: {name}")
        # /run is a tmpfs: the staged file never reaches the image.
        staged = f"{STAGING}/{i + 1:02d}"
        stage = f"mkdir -p {STAGING} && cat >{staged}"
        if isinstance(step, ShellFile | ShellInline):
            data = step.inline.encode() if isinstance(step, ShellInline) else spec.read(step.path)
            env = {
                "DEBIAN_FRONTEND": "noninteractive",
                "BAKER_IMAGE": spec.name,
                # Tools that stamp dates into files (useradd's shadow entries, say) use this
                # instead of today, so the image does not depend on the day it was baked.
                "SOURCE_DATE_EPOCH": str(source_date_epoch),
                **step.env,
            }
            run = f"env {ssh.env_prefix(env)} {_interpreter(data)} {staged} </dev/null"
            named = {k: (secret_values or {})[k] for k in step.secrets}
            if named:  # sent on their own, so they are never part of a command line
                exports = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in named.items())
                _send_secrets(guest, f"{staged}.env", exports.encode(), reporter, name)
                run = f"set -a && . {staged}.env && rm -f {staged}.env && set +a && {run}"
            command = f"{stage} && chmod 700 {staged} && {run}"
        else:
            data = spec.read(step.path)
            owner, _, group = step.owner.partition(":")
            dest = shlex.quote(str(PurePosixPath(step.dest)))
            command = (
                f"{stage} && install -D -m {step.mode} -o {owner} -g {group or owner} "
                f"{staged} {dest}"
            )
        try:
            code, tail = guest.run(
                f"sh -c {shlex.quote(command)}", _shown(reporter, name), step.timeout_s, data
            )
        except ConnectionLost as e:
            raise ConnectionLost(f"{str(e).rstrip('.')} (provisioner {name})") from None
        if code != 0:
            last = " | ".join(line for line in tail[-8:] if line.strip()) or "no output"
            how = f"exit {code}" if code >= 0 else "killed by a signal"
            raise BuildError(
                f"provisioner {name} failed ({how}); its last lines: {reporter.masked(last)}"
            )
        done(i + 1)
    return len(steps)


def _send_secrets(guest: Guest, path: str, data: bytes, reporter: Reporter, name: str) -> None:
    """The environment file, readable by root only, on /run (a tmpfs: never the image)."""
    command = f"mkdir -p {STAGING} && umask 077 && cat >{path}"
    code, _ = guest.run(f"sh -c {shlex.quote(command)}", _shown(reporter, name), 60, data)
    if code != 0:
        raise BuildError(f"could not hand provisioner {name} its secrets (exit {code}).")


def _shown(reporter: Reporter, name: str) -> Callable[[str], None]:
    return lambda line: reporter.output(name, line)


def _interpreter(script: bytes) -> str:
    """How to run a script from /run, which is mounted noexec: through the interpreter its
    #! line names (as the kernel would), or sh -e, so a failing command fails the step."""
    if script.startswith(b"#!"):
        line = script.split(b"\n", 1)[0][2:].decode(errors="replace").strip()
        if line:
            return line
    return "/bin/sh -e"

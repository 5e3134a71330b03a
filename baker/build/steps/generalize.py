"""The generalize step of a cloud build: a cloud makes its image of the disk as it is, so the
machine is generalized in place, by the capture's own rules (baker.image.generalize), and
its package list and copyright files are read after that: what the SBOM lists is what the
image holds. A local build needs none of this: its capture applies the rules."""

from __future__ import annotations

import contextlib
import io
import shlex
import tarfile

from baker.backends.base import Guest
from baker.build.runner import Step
from baker.build.state import BuildState, Context, need
from baker.errors import BuildError
from baker.image import generalize
from baker.image.packages import parse_status

TIMEOUT_S = 120
GUEST_DPKG_STATUS = "/var/lib/dpkg/status"
# /run is a tmpfs: what is gathered there is read, and never reaches the image.
COPYRIGHTS_TAR = "/run/baker-copyrights.tar"
_GATHER = (
    'cd / && for d in usr/share/doc/*/; do [ -f "${d}copyright" ] && echo "${d}copyright"; '
    f"done | tar --create --dereference --file={COPYRIGHTS_TAR} --files-from=- 2>/dev/null; "
    f"[ -f {COPYRIGHTS_TAR} ]"
)
MAX_COPYRIGHT = 262144  # a copyright file's first 256 KiB, as a local capture reads it


class GeneralizeInGuest(Step):
    name = "generalize"
    uses_machine = True

    def __init__(self, first: tuple[str, ...] = (), last: tuple[str, ...] = ()) -> None:
        # Commands before the rules (a vendor image's own SSH files put back) and after them
        # (free space trimmed, for a disk published as it is).
        self.first, self.last = first, last

    def describe(self, ctx: Context) -> str:
        return "generalize the machine in place, read its packages"

    def run(self, ctx: Context, state: BuildState, cleanup: contextlib.ExitStack) -> None:
        guest = need(state.guest, "a session")
        removed = []
        commands = (
            *generalize.IN_GUEST,
            *self.first,
            f"sh -c {shlex.quote(generalize.guest_script())}",
            *self.last,
        )
        for command in commands:
            for line in _run(ctx, guest, command):
                if line.startswith(generalize.REMOVED):
                    removed.append(line.removeprefix(generalize.REMOVED).removeprefix("."))
        # The rules are recorded as rules, the other commands as they ran.
        ran = (*generalize.IN_GUEST, *self.first, *self.last)
        state.generalized = generalize.Generalized(tuple(sorted(removed)), ran)
        ctx.reporter.info(f"generalized the machine: {len(removed)} paths removed")
        state.dpkg_status = guest.read(GUEST_DPKG_STATUS).decode(errors="replace")
        state.packages = parse_status(state.dpkg_status)
        state.copyrights = _copyrights(ctx, guest, {p.name for p in state.packages})


def _run(ctx: Context, guest: Guest, command: str) -> list[str]:
    lines: list[str] = []

    def on_line(line: str) -> None:
        lines.append(line)
        ctx.reporter.output("generalize", line)

    code, tail = guest.run(command, on_line, TIMEOUT_S)
    if code != 0:
        last = " | ".join(tail[-5:]) or "no output"
        raise BuildError(f"generalizing the build machine failed (exit {code}): {last}")
    return lines


def _copyrights(ctx: Context, guest: Guest, packages: set[str]) -> dict[str, str]:
    """Each installed package's copyright text (for the SBOMs' licenses), gathered into one
    tar in the machine's /run and read in one go."""
    _run(ctx, guest, f"sh -c {shlex.quote(_GATHER)}")
    data = guest.read(COPYRIGHTS_TAR)
    _run(ctx, guest, f"rm -f {COPYRIGHTS_TAR}")
    out: dict[str, str] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            for member in tar:
                parts = member.name.split("/")
                if member.isfile() and len(parts) == 5 and parts[3] in packages:
                    f = tar.extractfile(member)
                    if f is not None:
                        out[parts[3]] = f.read(MAX_COPYRIGHT).decode(errors="replace")
    except tarfile.TarError as e:
        raise BuildError(f"the copyright files read from the build machine: {e}.") from None
    return out

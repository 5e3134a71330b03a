"""The two ways a baker command fails, each with its exit code (DESIGN.md, CLI contract)."""

from __future__ import annotations

from pathlib import Path


class BakerError(Exception):
    """A failure reported to the user as one sentence, without a traceback."""

    exit_code = 1


class InputError(BakerError):
    """Bad input: a recipe, an argument or a file the user gave us (exit 2)."""

    exit_code = 2


class BuildError(BakerError):
    """The build or a check failed on valid input (exit 1)."""

    exit_code = 1


class DiskFull(BuildError):
    """A write that failed for want of space, as one sentence naming the file system by its
    mount point (baker.edge.tools.disk_full makes it). The parts are kept so that the build
    runner can say it again with the step and what the step needs there: `free` and `total`
    are bytes, `full` whether the disk was (nearly) full when it was looked at (a tool's or
    step's own cleanup may have given the space back by then), `said` what failed, in its
    own words."""

    def __init__(
        self, message: str, *, mount: Path, free: int, total: int, full: bool, said: str
    ) -> None:
        super().__init__(message)
        self.mount, self.free, self.total, self.full, self.said = mount, free, total, full, said

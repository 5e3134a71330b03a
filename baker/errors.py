"""The two ways a baker command fails, each with its exit code (DESIGN.md, CLI contract)."""


class BakerError(Exception):
    """A failure reported to the user as one sentence, without a traceback."""

    exit_code = 1


class InputError(BakerError):
    """Bad input: a recipe, an argument or a file the user gave us (exit 2)."""

    exit_code = 2


class BuildError(BakerError):
    """The build or a check failed on valid input (exit 1)."""

    exit_code = 1

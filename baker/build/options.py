"""What a build is asked to do, whatever its backend: the options, the result, and the
throwaway work directory it runs in."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from baker.artifact import Carried
from baker.cache import Cache

AccelChoice = Literal["auto", "kvm", "tcg"]
OnError = Literal["abort", "keep", "ask"]


@dataclass(frozen=True)
class Options:
    """A build's options. The ones a user sets are FLAGS below: the command line, nightly's
    and the farm's child builds all take them from that one table."""

    out: Path = Path("out")
    # Where a `base.image: recipe:FILE` parent's artifact is found (PARENTS/NAME); None: out.
    parents: Path | None = None
    accel: AccelChoice = "auto"
    sign_key: Path | None = None
    no_cache: bool = False  # run every step; look nothing up (outputs are still stored)
    # What a failed provisioner or test does to the machine: abort (destroy it), keep it
    # running for a look, or ask (on a terminal) through `decide`.
    on_error: OnError = "abort"
    cache: Cache = field(default_factory=Cache)
    measure: bool = True  # a rebuild that only compares digests skips the boot measurement
    # A build whose step cache is thrown away (a rebuild's) boots its machine and saves none.
    save_machine: bool = True
    boot_runs: int | None = None  # measured boots under the main firmware; None: the recipe's
    # A rebuild of an imported bundle: the parent it carried.
    carried_parent: Carried | None = None
    work_root: Path | None = None  # where the throwaway work directory goes
    vuln_db: Path | None = None  # the vulnerability snapshot, instead of the recipe's scan.db
    decide: Callable[[Failure], str] | None = None


@dataclass(frozen=True)
class Flag:
    """A build option on the command line: the Options field it sets, and its words."""

    field: str
    flag: str
    help: str
    metavar: str | None = None
    envvar: str | None = None


FLAGS: tuple[Flag, ...] = (
    Flag("out", "--out", "Where the artifact directory goes (OUT/NAME).", "OUT"),
    Flag(
        "parents",
        "--parents",
        "Where a `base.image: recipe:FILE` parent's artifact is found (DIR/NAME; default OUT).",
        "DIR",
    ),
    Flag(
        "accel",
        "--accel",
        "The accelerator: kvm where it works and tcg elsewhere (auto), or the one named.",
        "auto|kvm|tcg",
    ),
    Flag(
        "sign_key",
        "--sign-key",
        "The ECDSA P-256 private key (baker keygen) that signs the image and the provenance.",
        "KEY",
        envvar="BAKER_SIGN_KEY",
    ),
    Flag("no_cache", "--no-cache", "Run every step; reuse nothing from the step cache."),
    Flag(
        "boot_runs",
        "--boot-runs",
        "Measured boots of the published image under its main firmware (1 to 20), instead of "
        "the recipe's boot_runs: fewer for a quick look, more for a steadier median.",
        "N",
    ),
    Flag(
        "vuln_db",
        "--vuln-db",
        "The vulnerability database snapshot to scan the image against (a Debian Security "
        "Tracker JSON or OSV file), instead of the recipe's scan.db.",
        "FILE",
    ),
    Flag(
        "on_error",
        "--on-error",
        "What a failed provisioner or test does to the build machine: abort (destroy it), "
        "keep it running for a look, or ask on the terminal (retry, shell, keep or abort).",
        "abort|keep|ask",
    ),
)


def flag(field_name: str) -> Flag:
    return next(f for f in FLAGS if f.field == field_name)


def argv(opts: Options) -> list[str]:
    """The command-line flags that give a child `baker build` these options: each one that
    differs from its default."""
    default = Options()
    out: list[str] = []
    for f in FLAGS:
        value = getattr(opts, f.field)
        if value == getattr(default, f.field):
            continue
        if isinstance(value, bool):
            out.append(f.flag)
        else:
            out.append(f"{f.flag}={value}")
    return out


@dataclass(frozen=True)
class Failure:
    """A failed step, for an `--on-error ask` prompt: what failed, and how to reach the
    machine it failed on."""

    step: str
    error: str
    ssh: str  # the command that logs in to the machine


@dataclass(frozen=True)
class Result:
    digest: str  # sha256:<hex> of the image, or an EC2 build's ec2:REGION:AMI-ID
    artifact: Path


def display_path(path: Path) -> str:
    """The recipe's path relative to where baker runs when it is below it (the repository)."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)

"""The recipe's safety fields: build secrets, the leak check's allowlist, the vulnerability
gate; the regression gates and boot budgets (a build that is worse than it may be fails); and
what the nightly keeps of earlier nights' images."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator
from pydantic_core import PydanticCustomError

SecretName = Annotated[str, StringConstraints(pattern=r"^[A-Z_][A-Z0-9_]{0,63}$")]
EnvName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")]
Reason = Annotated[str, StringConstraints(min_length=3, max_length=500)]
Severity = Literal["critical", "high", "medium", "low"]
# A tag, or an fnmatch pattern of tags (release-*, 2026-12-*, sha256:0f3c*).
KeepTag = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:*?\[\]!-]{1,200}$")]
MAX_SECRET_BYTES = 64 * 1024  # a token, a key, a certificate: never a data file


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Secret(_Model):
    """Where a build secret's value comes from on the build host: never from the recipe."""

    env: EnvName | None = None
    file: str | None = None

    @model_validator(mode="after")
    def _one(self) -> Secret:
        if (self.env is None) == (self.file is None):
            raise PydanticCustomError("secret_source", "give exactly one of env or file")
        return self

    @property
    def where(self) -> str:
        """What the provenance records of it: where it came from, never its value."""
        return f"env:{self.env}" if self.env is not None else f"file:{self.file}"


class Allowed(_Model):
    """A finding of the leak check the team has looked at: a path and why it may ship."""

    path: Annotated[str, StringConstraints(pattern=r"^/[^\x00]*$")]
    reason: Reason


class LeakCheck(_Model):
    allow: tuple[Allowed, ...] = ()


class Ignore(_Model):
    """A vulnerability the gate does not count, for a reason, until a date."""

    id: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{2,63}$")]
    reason: Reason
    until: dt.date


class Scan(_Model):
    # The pinned snapshot, a file in the project (or --vuln-db): an input like the lock.
    db: str | None = None
    # No threshold: the report is made and the build never fails on it.
    fail_on: Severity | None = None
    fixable_only: bool = True
    ignore: tuple[Ignore, ...] = ()


class PerAccel(_Model):
    """A budget per place a boot is measured: an accelerator here, or an EC2 instance."""

    kvm: float | None = Field(None, gt=0)
    tcg: float | None = Field(None, gt=0)
    ec2: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _some(self) -> PerAccel:
        # A local image is measured under whichever accelerator the host has: both, or none.
        if (self.kvm is None) != (self.tcg is None) or (self.kvm is None and self.ec2 is None):
            raise PydanticCustomError("budget", "give kvm and tcg together, and/or ec2")
        return self


class Retention(_Model):
    """Which of its earlier images the nightly keeps: the rules `baker prune` takes as
    --keep, --older-than and --keep-tag (baker.lifecycle.retention; baker.nightly.lifecycle
    turns these fields into its Policy, since the recipe sits on a floor below it)."""

    keep: int | None = Field(None, ge=1)  # the newest N images
    older_than_days: float | None = Field(None, ge=0)  # only images built longer ago may go
    keep_tags: tuple[KeepTag, ...] = ()  # fnmatch patterns: an image tagged so is kept

    @model_validator(mode="after")
    def _some(self) -> Retention:
        if self.keep is None and self.older_than_days is None:
            raise PydanticCustomError(
                "retention", "say what to keep: keep, older_than_days or both"
            )
        return self


class Nightly(_Model):
    """Regression gates for `baker nightly`: a night that is slower to boot or larger than
    the median of the last `window` good nights by more than these percentages fails. And
    `retention`: which earlier images it keeps (none given: every one)."""

    max_boot_regression_pct: float | None = Field(None, gt=0)
    max_size_regression_pct: float | None = Field(None, gt=0)
    window: int = Field(7, ge=1, le=100)
    retention: Retention | None = None

"""Which old images may go: the rules `baker prune`, `baker prune --ec2` and the nightly's
retention share, decided on plain facts so each place only gathers its candidates.

An image is kept when any rule keeps it: a tag matching a keep pattern points to it, it is
one of the newest N of its name, it is younger than the age limit, or an image kept for any
of these reasons names it as an ancestor (a rollback to a kept child must find its parent).
Everything else may be deleted."""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from baker.errors import InputError


@dataclass(frozen=True)
class Policy:
    keep: int | None = None  # the newest N of each image name
    older_than_days: float | None = None  # only images built longer ago than this may go
    keep_tags: tuple[str, ...] = ()  # fnmatch patterns: an image tagged so is never deleted

    def __post_init__(self) -> None:
        if self.keep is None and self.older_than_days is None:
            raise InputError("say what to keep: --keep N, --older-than DAYS or both.")
        if self.keep is not None and self.keep < 1:
            raise InputError(f"--keep {self.keep}: keep at least 1 image of each name.")
        if self.older_than_days is not None and self.older_than_days < 0:
            raise InputError(f"--older-than {self.older_than_days:g}: days cannot be negative.")


@dataclass(frozen=True)
class Candidate:
    key: str  # what a deletion removes: a manifest digest, an AMI id, a directory
    name: str  # the image's name (its recipe's): the newest N are counted per name
    image: str  # its image digest, sha256:<hex>, which children name their parent by
    built: datetime  # when its build finished
    tags: tuple[str, ...] = ()
    ancestors: tuple[str, ...] = ()  # image digests of its parent and the parent's ancestors


@dataclass(frozen=True)
class Decision:
    candidate: Candidate
    keep: bool
    why: str


def decide(candidates: Sequence[Candidate], policy: Policy, now: datetime) -> list[Decision]:
    """A decision for each candidate, newest first within each name."""
    reasons: dict[str, str] = {}
    by_name: dict[str, list[Candidate]] = {}
    for c in candidates:
        by_name.setdefault(c.name, []).append(c)
    order = []
    for name in sorted(by_name):
        group = sorted(by_name[name], key=lambda c: (c.built, c.key), reverse=True)
        order += group
        for rank, c in enumerate(group):
            if tag := next((t for t in c.tags if _matches(t, policy.keep_tags)), None):
                reasons.setdefault(c.key, f"tag {tag} matches --keep-tag")
            elif policy.keep is not None and rank < policy.keep:
                reasons.setdefault(c.key, f"one of the newest {policy.keep} of {name}")
            elif policy.older_than_days is not None and _age_days(c, now) < policy.older_than_days:
                reasons.setdefault(c.key, f"built {_age_days(c, now):.1f} days ago")
    # Ancestors of kept images, until nothing more is kept (a kept grandchild keeps both).
    by_image: dict[str, list[Candidate]] = {}
    for c in candidates:
        by_image.setdefault(c.image, []).append(c)
    pending = [c for c in candidates if c.key in reasons]
    while pending:
        child = pending.pop()
        for digest in child.ancestors:
            for parent in by_image.get(digest, []):
                if parent.key not in reasons:
                    reasons[parent.key] = f"the parent of kept {child.name} ({_short(child)})"
                    pending.append(parent)
    return [
        Decision(c, c.key in reasons, reasons.get(c.key, _why_delete(c, policy, now)))
        for c in order
    ]


def _matches(tag: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(tag, p) for p in patterns)


def _age_days(c: Candidate, now: datetime) -> float:
    return (now - c.built).total_seconds() / 86400


def _short(c: Candidate) -> str:
    return c.key if len(c.key) < 24 else c.key[:19]


def _why_delete(c: Candidate, policy: Policy, now: datetime) -> str:
    said = []
    if policy.keep is not None:
        said.append(f"not one of the newest {policy.keep} of {c.name}")
    if policy.older_than_days is not None:
        said.append(f"built {_age_days(c, now):.1f} days ago")
    return ", ".join(said)

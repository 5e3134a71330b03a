"""What the nightly keeps of earlier nights' images, and what it says of revoked ones.

A night keeps one image a recipe: OUT/NAME, the last good one. A changed build that passes
replaces it and the earlier directory is deleted, tonight's builds are made in a temporary
directory that goes at the end, and the nightly pushes nothing (a farm worker stores what it
builds, but in its own store, which the nightly is not told of). What stays of an earlier
night is its rows in the history and, in the report site, NAME/NIGHT/ with copies of that
night's SBOMs. So the recipe's `nightly.retention` decides over the recipe's images as the
history knows them, each image digest its good nights had, with baker.lifecycle.retention's
rules: an image it no longer keeps is marked `pruned` on its rows (the night, and why), and
the report deletes its nights' copies and says so. The image in OUT/NAME is never pruned,
nor one that an image kept (of any recipe) names as its parent or an ancestor.

A revoked image: `revocation.dsse.json` beside OUT/NAME (as `baker revoke` writes it) that
verifies with the nightly's signing key, read before tonight's build can replace the
directory and recorded on every row of the image it names; the report strikes it through.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from baker import artifact
from baker.errors import InputError
from baker.evidence import revocation, signing
from baker.lifecycle import retention
from baker.nightly.history import GOOD, History
from baker.recipe.safety import Retention
from baker.recipe.spec import Spec

NIGHT = "%Y-%m-%dT%H:%M:%SZ"  # a night's id: when it started, UTC
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def policy(fields: Retention) -> retention.Policy:
    """The recipe's `nightly.retention` as the rules take it."""
    return retention.Policy(fields.keep, fields.older_than_days, fields.keep_tags)


def policies(specs: Iterable[Spec | None]) -> dict[str, retention.Policy]:
    """The rules of each recipe that gives `nightly.retention`, by image name."""
    return {
        s.name: policy(s.recipe.nightly.retention)
        for s in specs
        if s is not None and s.recipe.nightly.retention is not None
    }


def ancestors(record: artifact.BuildRecord) -> list[str]:
    """The image digests an image is built on: its parent's, then the parent's ancestors'."""
    if record.parent is None:
        return []
    return [record.parent.digest, *(a.digest for a in record.parent.ancestors)]


# --- revoked images -------------------------------------------------------------------------


def signer_keys(sign_key: Path | None) -> list[ec.EllipticCurvePublicKey]:
    """The key a revocation beside the nightly's artifacts must verify with: the public half
    of its --sign-key, derived from the private key, else read from the .pub beside it."""
    if sign_key is None:
        return []
    try:
        return [signing.load_private_key(sign_key).public_key()]
    except InputError:
        pub = sign_key.with_suffix(".pub")
        try:
            return [signing.load_public_key(pub)] if pub.is_file() else []
        except InputError:
            return []


def revocations(
    out: Path, names: Iterable[str], sign_key: Path | None, say: Callable[[str], None]
) -> list[tuple[str, revocation.Revocation]]:
    """(recipe, statement) for each revocation beside OUT/NAME that verifies with the signing
    key; one line said for each that does not, which is ignored."""
    found: list[tuple[str, revocation.Revocation]] = []
    keys: list[ec.EllipticCurvePublicKey] | None = None
    for name in dict.fromkeys(names):
        envelopes = revocation.beside(out / name)
        if not envelopes:
            continue
        keys = signer_keys(sign_key) if keys is None else keys
        if not keys:
            say(f"[{name}] baker: {out / name / revocation.FILE} is not checked: the nightly "
                "has no --sign-key whose public key could verify it")  # fmt: skip
            continue
        good, ignored = revocation.collect(envelopes, keys)
        for line in ignored:
            say(f"[{name}] baker: {line.rstrip('.')}; ignored")
        found += [(name, r) for r in good]
    return found


def record_revoked(history: History, found: Sequence[tuple[str, revocation.Revocation]]) -> None:
    """Each revocation on the rows of the image it names (every night that image had)."""
    for name, r in found:
        said = {"reason": r.reason, "revoked_at": r.revoked_at, "keyid": r.keyid}
        history.annotate(name, r.image, revoked={**said, "says": r.says()})


# --- retention ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pruned:
    name: str
    image: str
    built: str  # the first night it was the night's image
    why: str


def prune(
    history: History,
    policies: dict[str, retention.Policy],
    night: str,
    say: Callable[[str], None],
) -> list[Pruned]:
    """Apply each recipe's policy (by image name) to its images in the history, tonight
    included; mark those it no longer keeps as pruned by `night`, and return them."""
    rows = history.all()
    candidates, unaged = _candidates(rows)
    current = {r["recipe"]: r["digest"] for r in rows if r["status"] in GOOD and r.get("digest")}
    now = _parse(night) or dt.datetime.now(dt.UTC)
    going: dict[str, tuple[retention.Candidate, str]] = {}
    for name, rules in sorted(policies.items()):
        for d in retention.decide(candidates.get(name, []), rules, now):
            if not d.keep and d.candidate.image != current.get(name):
                going[d.candidate.key] = (d.candidate, d.why)
    # An image any kept one (of any recipe, with rules or without) descends from stays.
    kept = [c for cs in candidates.values() for c in cs if c.key not in going] + unaged
    while kept:
        child = kept.pop()
        for c, _ in [g for g in going.values() if g[0].image in child.ancestors]:
            del going[c.key]
            kept.append(c)
    pruned = []
    for c, why in going.values():
        built = c.built.strftime(NIGHT)
        history.annotate(c.name, c.image, pruned={"night": night, "why": why})
        say(f"[{c.name}] baker: retention: removed {c.image[:19]} (built {built}): {why}")
        pruned.append(Pruned(c.name, c.image, built, why))
    return pruned


def _candidates(
    rows: list[dict[str, Any]],
) -> tuple[dict[str, list[retention.Candidate]], list[retention.Candidate]]:
    """Each recipe's images that are still kept: (recipe, digest) with a good night not
    pruned since. Built: its first such night; tags: its digest and those nights; ancestors:
    as its build.json recorded them, or (a history from before they were recorded) the
    parent recipe's image of the same night. Second, those whose night is not a night's id:
    nothing to age them by, so never candidates, but their ancestors are kept."""
    good = [r for r in rows if r["status"] in GOOD and r.get("digest")]
    by_night = {(r["night"], r["recipe"]): r["digest"] for r in good}
    nights: dict[tuple[str, str], list[str]] = {}
    ancestors: dict[tuple[str, str], list[str]] = {}
    for r in good:
        if r.get("pruned"):
            continue
        key = (r["recipe"], r["digest"])
        nights.setdefault(key, []).append(r["night"])
        line = ancestors.setdefault(key, [])
        recorded = r.get("ancestors")
        if recorded is None and (parent := by_night.get((r["night"], r.get("parent") or ""))):
            recorded = [parent]
        line += [a for a in recorded or [] if isinstance(a, str) and a not in line]
    out: dict[str, list[retention.Candidate]] = {}
    unaged = []
    for (name, digest), seen in nights.items():
        built = _parse(min(seen))
        tags = (digest, *dict.fromkeys(seen))
        candidate = retention.Candidate(f"{name}@{digest}", name, digest, built or _EPOCH,
                                        tags, tuple(ancestors[name, digest]))  # fmt: skip
        if built is None:
            unaged.append(candidate)
        else:
            out.setdefault(name, []).append(candidate)
    return out, unaged


def _parse(night: str) -> dt.datetime | None:
    try:
        return dt.datetime.strptime(night, NIGHT).replace(tzinfo=dt.UTC)
    except ValueError:
        return None

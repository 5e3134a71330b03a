"""Time to patch, from the nights' vulnerability reports: a fix is in the snapshot the night
a finding first shows as fixable in an image, and in the image the first good night after
it that no longer has it. The nights say it; no advisory dates are needed (the tracker's
JSON has none)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import median
from typing import Any

GOOD = ("built", "unchanged")


@dataclass(frozen=True)
class Patch:
    id: str
    fixable_since: str  # the night its fix was first in the snapshot
    patched_on: str | None  # the first night's image without it; None: still open
    days: float  # to the patch, or (still open) to the last night


def _when(night: str) -> dt.datetime:
    return dt.datetime.fromisoformat(night.replace("Z", "+00:00"))


def _days(a: str, b: str) -> float:
    return round((_when(b) - _when(a)).total_seconds() / 86400, 1)


def patches(rows: Sequence[dict[str, Any]]) -> list[Patch]:
    """Each fixable finding of the good nights, oldest first: patched ones, then open ones."""
    scanned = [r for r in rows if r["status"] in GOOD and isinstance(r.get("vulns"), dict)]
    since: dict[str, str] = {}
    done: list[Patch] = []
    for r in scanned:
        ids = set(r["vulns"].get("fixable_ids") or [])
        for vid in sorted(ids - since.keys()):
            since[vid] = r["night"]
        for vid in sorted(since.keys() - ids):
            done.append(Patch(vid, since[vid], r["night"], _days(since[vid], r["night"])))
            del since[vid]
    last = scanned[-1]["night"] if scanned else ""
    still = [Patch(v, s, None, _days(s, last)) for v, s in sorted(since.items())]
    return done + still


def median_days(found: Sequence[Patch]) -> float | None:
    """The median time to patch over the patched findings; None before the first patch."""
    days = [p.days for p in found if p.patched_on is not None]
    return round(median(days), 1) if days else None

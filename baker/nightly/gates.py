"""Regression gates: a night slower to boot or larger than its recent past fails.

Tonight's boot figure is already the median of its measured runs (boot.json); it is compared
with the median of the last N good nights' medians, so one noisy run or one noisy night
neither fails a build nor hides a real regression.
"""

from __future__ import annotations

import statistics
from typing import Any

from baker.recipe.safety import Nightly


def check(
    gates: Nightly, past: list[dict[str, Any]], boot_s: float | None, size: int | None
) -> list[str]:
    """The gates tonight's figures break, one sentence each (both numbers in it)."""
    broken = []
    for label, limit, column, tonight, unit in (
        ("boot median", gates.max_boot_regression_pct, "boot_median_s", boot_s, " s"),
        ("image size", gates.max_size_regression_pct, "size", size, " bytes"),
    ):
        values = [float(r[column]) for r in past[: gates.window] if r.get(column) is not None]
        if limit is None or tonight is None or not values:
            continue
        median = statistics.median(values)
        if median <= 0:
            continue
        pct = (tonight - median) / median * 100
        if pct > limit:
            broken.append(
                f"{label} {tonight:g}{unit} is {pct:.1f} % above the median {median:g}{unit} "
                f"of the last {len(values)} good nights (limit {limit:g} %)"
            )
    return broken

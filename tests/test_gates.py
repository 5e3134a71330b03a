"""Regression gates against the trailing median of good nights."""

from __future__ import annotations

from baker.nightly.gates import check
from baker.recipe.safety import Nightly

PAST = [
    {"boot_median_s": v, "size": s}
    for v, s in [(15.0, 1000), (15.4, 1000), (30.0, 1010), (14.8, 990), (15.1, 1000)]
]


def test_a_slow_night_beyond_the_limit_fails_with_both_numbers() -> None:
    broken = check(Nightly(max_boot_regression_pct=15), PAST, 18.0, 1000)
    assert broken == [
        "boot median 18 s is 19.2 % above the median 15.1 s of the last 5 good nights (limit 15 %)"
    ]


def test_one_noisy_past_night_does_not_move_the_median() -> None:
    # 30 s once in the past: the mean would be 18.1 s, the median stays 15.1 s.
    assert check(Nightly(max_boot_regression_pct=15), PAST, 17.0, 1000) == []


def test_size_gate_and_window() -> None:
    assert check(Nightly(max_size_regression_pct=10), PAST, None, 1200)[0].startswith(
        "image size 1200 bytes is 20.0 % above the median 1000 bytes"
    )
    # Only the newest night counts with window 1.
    assert check(Nightly(max_size_regression_pct=10, window=1), [{"size": 1100}], None, 1200) == []


def test_no_gates_or_no_past_never_fail() -> None:
    assert check(Nightly(), PAST, 100.0, 10**9) == []
    assert check(Nightly(max_boot_regression_pct=1), [], 100.0, None) == []

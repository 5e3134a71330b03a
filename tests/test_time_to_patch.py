"""Open vulnerabilities and the time to patch over the nights (baker.nightly.patching), from
synthetic history rows as the night records them from each image's report, and on the report
site: the chart of fixable findings, the time-to-patch table, the index's cell."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from baker.nightly import patching
from baker.nightly.history import History
from baker.nightly.report import write


def _row(night: str, fixable: list[str], status: str = "built") -> dict[str, Any]:
    vulns = {"fixable": len(fixable), "no_fix": 2, "fixable_ids": fixable, "db": "sha256:d"}
    return {"night": night, "recipe": "web", "status": status,
            "digest": "sha256:" + "a" * 64, "vulns": vulns}  # fmt: skip


NIGHTS = [
    _row("2026-12-01T02:00:00Z", ["CVE-2099-1"]),
    _row("2026-12-02T02:00:00Z", ["CVE-2099-1", "CVE-2099-2"], "unchanged"),
    {"night": "2026-12-03T02:00:00Z", "recipe": "web", "status": "failed", "error": "x"},
    _row("2026-12-04T14:00:00Z", ["CVE-2099-2"]),
    _row("2026-12-06T02:00:00Z", ["CVE-2099-3"]),
]


def test_a_fix_counts_from_the_night_it_is_in_the_snapshot_to_the_image_without_it() -> None:
    found = patching.patches(NIGHTS)
    assert found == [
        patching.Patch("CVE-2099-1", "2026-12-01T02:00:00Z", "2026-12-04T14:00:00Z", 3.5),
        patching.Patch("CVE-2099-2", "2026-12-02T02:00:00Z", "2026-12-06T02:00:00Z", 4.0),
        patching.Patch("CVE-2099-3", "2026-12-06T02:00:00Z", None, 0.0),
    ]
    assert patching.median_days(found) == 3.8  # the open one is not counted
    assert patching.median_days(patching.patches(NIGHTS[:2])) is None


def test_the_site_charts_fixable_findings_and_tables_the_time_to_patch(tmp_path: Path) -> None:
    history = History(str(tmp_path / "h.db"))  # the migrations add the vulns column
    for row in NIGHTS:
        history.record(row)
    assert history.all("web")[0]["vulns"]["fixable_ids"] == ["CVE-2099-1"]
    index = write(history, NIGHTS[-1]["night"], tmp_path / "site")
    assert "1 fixable, 2 without a fix, patched in 3.8 days (median)" in index.read_text()
    page = (tmp_path / "site" / "web.html").read_text()
    assert page.count("<svg") == 4 and "web: vulnerabilities with a fix" in page
    assert "<td>CVE-2099-2</td>" in page and "<td>4.0</td>" in page
    assert "not yet" in page and "0.0 so far" in page
    history.close()

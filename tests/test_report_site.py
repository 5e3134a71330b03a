"""The report site from a history of synthetic nights: tonight's news first, one row an
image, and per image three SVG charts and each night's drift."""

from __future__ import annotations

from pathlib import Path

from baker.nightly import drift
from baker.nightly.history import History
from baker.nightly.report import write

DRIFT = {
    "old_digest": "sha256:" + "a" * 64,
    "new_digest": "sha256:" + "b" * 64,
    "packages": {
        "added": [],
        "removed": [],
        "upgraded": [
            {
                "name": "libssl3",
                "source": "openssl",
                "old": "3.0.19-1~deb12u1",
                "new": "3.0.19-1~deb12u2",
                "cves": ["CVE-2026-28387"],
                "bugs": [],
                "security": True,
                "changelog": True,
            }
        ],
    },
    "files": [{"path": "/usr/lib/x86_64-linux-gnu/libssl.so.3", "kind": "changed"}],
    "files_changed": 1,
    "size": {"old": 400e6, "new": 401e6, "delta": 1e6, "pct": 0.2},
    "boot_s": {"old": 15.0, "new": 15.2, "delta": 0.2, "pct": 1.3},
    "tests": [],
}


def _history(tmp_path: Path) -> History:
    h = History(str(tmp_path / "h.db"))
    for night, status, digest in (
        ("2026-11-30T02:00:00Z", "built", "a"),
        ("2026-12-01T02:00:00Z", "unchanged", "a"),
        ("2026-12-02T02:00:00Z", "built", "b"),
    ):
        h.record(
            {
                "night": night,
                "recipe": "web",
                "status": status,
                "digest": f"sha256:{digest * 64}",
                "size": 400_000_000,
                "packages": 150,
                "boot_median_s": 15.0,
                "boot_min_s": 14.5,
                "boot_max_s": 15.6,
                "signer": "fbef57aa2eb41226",
                "drift": DRIFT if digest == "b" else None,
            }
        )
    h.record(
        {
            "night": "2026-12-02T02:00:00Z",
            "recipe": "db",
            "status": "failed",
            "error": "boot median 20 s is 33.3 % above the median 15 s",
        }
    )
    return h


def test_index_leads_with_tonights_news(tmp_path: Path) -> None:
    h = _history(tmp_path)
    index = write(h, "2026-12-02T02:00:00Z", tmp_path / "site").read_text()
    news = index[index.index('id="news"') : index.index('id="images"')]
    assert "1 built, 0 unchanged, 1 failed" in news
    assert (
        "web rebuilt: 1 packages upgraded, fixing CVE-2026-28387; "
        "1 files changed (/usr/lib/x86_64-linux-gnu/libssl.so.3)" in news
    )
    assert "db failed: boot median 20 s is 33.3 % above" in news
    assert 'href="web.html"' in index and "http" not in index  # nothing from the network


def test_image_page_has_three_charts_and_the_drift(tmp_path: Path) -> None:
    h = _history(tmp_path)
    write(h, "2026-12-02T02:00:00Z", tmp_path / "site")
    page = (tmp_path / "site" / "web.html").read_text()
    assert page.count("<svg") == 3 and page.count("<circle") == 9
    assert "libssl3 3.0.19-1~deb12u1 -&gt; 3.0.19-1~deb12u2 [security] fixes CVE-2026-28387" in page


def test_drift_text_names_files_size_and_boot() -> None:
    text = drift.render("web", DRIFT)
    assert "files: changed /usr/lib/x86_64-linux-gnu/libssl.so.3" in text
    assert "size: 400.0 MB -> 401.0 MB (+0.2 %)" in text
    assert "boot: 15.0 s -> 15.2 s (+1.3 %)" in text

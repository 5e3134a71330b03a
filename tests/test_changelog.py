"""CVE ids and closed bugs of an upgrade, from real Debian changelogs (the first entries of
bookworm's openssl and glibc changelogs, as they are in the image)."""

from __future__ import annotations

from pathlib import Path

from baker.nightly import changelog

FIXTURES = Path(__file__).parent / "fixtures"


def _text(name: str) -> str:
    text = changelog.read(FIXTURES / f"{name}.changelog.Debian.gz")
    assert text is not None
    return text


def test_openssl_security_upgrade_lists_its_cves() -> None:
    got = changelog.fixes(_text("openssl"), "3.0.19-1~deb12u1", "3.0.19-1~deb12u2")
    assert got.versions == ["3.0.19-1~deb12u2"]
    assert got.cves == [
        "CVE-2026-28387",
        "CVE-2026-28389",
        "CVE-2026-28390",
        "CVE-2026-31789",
        "CVE-2026-31790",
    ]
    assert got.security is True


def test_a_point_release_upgrade_is_not_marked_security() -> None:
    got = changelog.fixes(_text("openssl"), "3.0.18-1~deb12u2", "3.0.19-1~deb12u1")
    assert got.versions == ["3.0.19-1~deb12u1"] and got.cves == [] and got.security is False


def test_glibc_range_gathers_cves_and_closed_bugs_across_entries_and_lines() -> None:
    got = changelog.fixes(_text("glibc"), "2.36-9+deb12u12", "2.36-9+deb12u14")
    assert got.versions == ["2.36-9+deb12u14", "2.36-9+deb12u13"]
    assert got.cves == [
        "CVE-2025-8058",
        "CVE-2025-15281",
        "CVE-2026-0861",
        "CVE-2026-0915",
        "CVE-2026-4046",
        "CVE-2026-4437",
        "CVE-2026-4438",
    ]
    # "Closes:" broken across a line still counts; the old version's own entry does not.
    assert 1125678 in got.bugs and 1131435 in got.bugs and 1109803 in got.bugs
    assert got.security is False


def test_the_old_versions_entry_and_older_ones_are_left_out() -> None:
    got = changelog.fixes(_text("glibc"), "2.36-9+deb12u6", "2.36-9+deb12u7")
    assert got.versions == ["2.36-9+deb12u7"] and got.security is True
    assert got.cves == ["CVE-2024-33599", "CVE-2024-33600", "CVE-2024-33601", "CVE-2024-33602"]
    assert "CVE-2024-2961" not in got.cves  # deb12u6's, already in the old version


def test_a_downgrade_or_same_version_fixes_nothing() -> None:
    assert changelog.fixes(_text("glibc"), "2.36-9+deb12u14", "2.36-9+deb12u14").versions == []
    assert changelog.fixes(_text("glibc"), "2.36-9+deb12u14", "2.36-9+deb12u2").cves == []


def test_find_stays_inside_the_tree(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "usr/share/doc/openssl").mkdir(parents=True)
    (root / "usr/share/doc/openssl/changelog.Debian.gz").write_bytes(b"")
    (root / "usr/share/doc/libssl3").symlink_to("openssl")
    (root / "usr/share/doc/evil").symlink_to("/usr/share/doc/libc6")
    assert (
        changelog.find(root, "libssl3", "openssl")
        == (root / "usr/share/doc/openssl/changelog.Debian.gz").resolve()
    )
    assert changelog.find(root, "evil", "evil") is None
    assert changelog.read(root / "usr/share/doc/openssl/changelog.Debian.gz") == ""
    assert changelog.read(root / "missing.gz") is None

"""The vulnerability scan (baker.security.vulndb, vulns): snapshots in the Debian Security
Tracker's and OSV's real formats, matched against an image's packages, gated, reported. No VM."""

from __future__ import annotations

import hashlib
import json
import threading
import zipfile
from collections.abc import Iterator
from datetime import date, timedelta
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

from baker.errors import BakerError, BuildError, InputError
from baker.image.packages import Package
from baker.security import vulndb, vulns
from baker.security.vulndb import VulnDB
from baker.security.vulns import Finding, Ignore

IMAGE = "sha256:" + "3f" * 32
TODAY = date(2025, 3, 1)
OLD_SSL, NEW_SSL = "3.0.11-1~deb12u1", "3.0.11-1~deb12u2"
ZLIB = "1:1.2.13.dfsg-1"


def _image(ssl: str) -> list[Package]:
    return [
        Package("bash", "5.2.15-2+b7", "amd64", "bash", "5.2.15-2"),
        Package("libssl3", ssl, "amd64", "openssl", ssl),
        Package("libssl3", ssl, "i386", "openssl", ssl),
        Package("openssl", ssl, "amd64", "openssl", ssl),
        Package("zlib1g", ZLIB, "amd64", "zlib", ZLIB),
    ]


def _release(status: str, urgency: str, fixed: str | None = None) -> dict[str, Any]:
    """One release of a tracker issue, as security-tracker.debian.org/tracker/data/json has."""
    r: dict[str, Any] = {
        "status": status,
        "repositories": {"bookworm": OLD_SSL},
        "urgency": urgency,
    }
    if fixed is not None:
        r["fixed_version"] = fixed
    return r


def _issue(description: str, **releases: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "scope": "remote", "debianbug": 1064000,
            "releases": releases}  # fmt: skip


TRACKER = {
    "openssl": {
        "CVE-2024-0001": _issue(
            "a buffer overflow in the X.509 parser",
            bookworm=_release("resolved", "high", NEW_SSL),
            trixie=_release("resolved", "high", "3.1.5-1"),
        ),
        "CVE-2024-0002": _issue("a timing side channel", bookworm=_release("open", "low**")),
        "CVE-2024-0003": _issue("a crash in a test tool", bookworm=_release("open", "unimportant")),
        "CVE-2024-0004": _issue("in code added in 3.1", bookworm=_release("resolved", "low", "0")),
        "CVE-2024-0005": _issue("only in trixie", trixie=_release("open", "medium")),
        "CVE-2024-0006": _issue("a remote crash", bookworm=_release("open", "high")),
    },
    "zlib": {
        "TEMP-0000000-ABCDEF": _issue(
            "not yet triaged", bookworm=_release("resolved", "not yet assigned", "1:1.2.13.dfsg-2")
        ),
    },
}

OSV_ID = "DEBIAN-CVE-2024-0001"


def _affected(name: str, fixed: str | None, ecosystem: str = "Debian:12") -> dict[str, Any]:
    events: list[dict[str, str]] = [{"introduced": "0"}]
    if fixed is not None:
        events.append({"fixed": fixed})
    return {"package": {"ecosystem": ecosystem, "name": name},
            "ranges": [{"type": "ECOSYSTEM", "events": events}]}  # fmt: skip


def _cvss(vector: str) -> list[dict[str, str]]:
    return [{"type": "CVSS_V3", "score": vector}]


OSV = [
    # The DSA that shipped the fix, for two CVEs; the first also has a record of its own.
    {"id": "DSA-5678-1", "summary": "openssl - security update", "upstream": ["CVE-2024-0001",
     "CVE-2024-0007"], "published": "2024-05-02T00:00:00Z", "modified": "2024-05-02T00:00:00Z",
     "affected": [_affected("openssl", NEW_SSL)]},
    {"id": OSV_ID, "upstream": ["CVE-2024-0001"], "published": "2024-04-30T00:00:00Z",
     "modified": "2024-05-02T00:00:00Z",
     "severity": _cvss("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"),  # 9.8, but Debian: high
     "affected": [{**_affected("openssl", NEW_SSL), "ecosystem_specific": {"urgency": "high"}},
                  _affected("openssl", "3.1.5-1", "Debian:13")]},
    # No urgency: the CVSS v3 base scores give the severity (9.8, 7.8, 6.1, 3.4).
    {"id": "DEBIAN-CVE-2024-0010", "modified": "2024-06-01T00:00:00Z",
     "severity": _cvss("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"),
     "affected": [_affected("zlib", None)]},
    {"id": "DEBIAN-CVE-2024-0011", "modified": "2024-06-01T00:00:00Z",
     "severity": _cvss("CVSS:3.1/AV:L/AC:L/PR:L/UI:N/S:U/C:H/I:H/A:H"),
     "affected": [_affected("zlib", "1:1.2.13.dfsg-1+deb12u1")]},
    {"id": "DEBIAN-CVE-2024-0012", "modified": "2024-06-01T00:00:00Z",
     "severity": _cvss("CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:C/C:L/I:L/A:N"),
     "affected": [_affected("zlib", None)]},
    {"id": "DEBIAN-CVE-2024-0013", "modified": "2024-06-01T00:00:00Z",
     "severity": _cvss("CVSS:3.1/AV:N/AC:H/PR:N/UI:R/S:C/C:L/I:N/A:N"),
     "affected": [_affected("zlib", None)]},
    {"id": "DEBIAN-CVE-2024-0014", "modified": "2024-06-01T00:00:00Z",
     "affected": [_affected("zlib", "0")]},  # never affected
    {"id": "DEBIAN-CVE-2024-0015", "withdrawn": "2024-07-01T00:00:00Z",
     "modified": "2024-07-01T00:00:00Z", "affected": [_affected("zlib", None)]},
    {"id": "DEBIAN-CVE-2024-0016", "modified": "2024-06-01T00:00:00Z",  # another distribution
     "affected": [_affected("zlib", None, "Ubuntu:22.04:LTS")]},
]  # fmt: skip


def _write_json(path: Path, value: object) -> Path:
    path.write_text(json.dumps(value, indent=1))
    return path


def _write_zip(path: Path, records: list[dict[str, Any]]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for r in records:
            z.writestr(f"{r['id']}.json", json.dumps(r))
    return path


@pytest.fixture
def tracker(tmp_path: Path) -> VulnDB:
    return vulndb.load(_write_json(tmp_path / "tracker.json", TRACKER))


def _by_id(findings: list[Finding]) -> dict[str, Finding]:
    assert len({f.id for f in findings}) == len(findings)
    return {f.id: f for f in findings}


# loading -----------------------------------------------------------------------------------


def test_the_tracker_normalizes_to_advisories(tmp_path: Path) -> None:
    path = _write_json(tmp_path / "tracker.json", TRACKER)
    db = vulndb.load(path)
    assert db.kind == "debian-tracker"
    assert db.digest == "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    assert db.releases == {"bookworm", "trixie"}
    ssl = {a.id: a for a in db.advisories("bookworm", "openssl")}
    assert sorted(ssl) == ["CVE-2024-0001", "CVE-2024-0002", "CVE-2024-0003", "CVE-2024-0004",
                           "CVE-2024-0006"]  # fmt: skip
    assert (ssl["CVE-2024-0001"].fixed, ssl["CVE-2024-0001"].severity) == (NEW_SSL, "high")
    assert (ssl["CVE-2024-0002"].fixed, ssl["CVE-2024-0002"].severity) == (None, "low")
    assert ssl["CVE-2024-0003"].severity == "none"  # unimportant
    assert ssl["CVE-2024-0004"].not_affected and ssl["CVE-2024-0004"].fixed is None
    assert db.advisories("bookworm", "zlib")[0].severity == "unknown"  # not yet assigned
    assert [a.id for a in db.advisories("trixie", "openssl")] == ["CVE-2024-0001", "CVE-2024-0005"]


def test_only_the_releases_asked_for_are_kept(tmp_path: Path) -> None:
    db = vulndb.load(_write_json(tmp_path / "t.json", TRACKER), releases=["bookworm"])
    assert db.advisories("trixie", "openssl") == ()
    assert db.releases == {"bookworm", "trixie"}  # what the file covers, all the same
    assert len(db.advisories("bookworm", "openssl")) == 5


def test_osv_as_an_array_and_as_a_zip_give_the_same_advisories(tmp_path: Path) -> None:
    array = vulndb.load(_write_json(tmp_path / "osv.json", OSV))
    archive = vulndb.load(_write_zip(tmp_path / "all.zip", OSV))
    assert array.kind == archive.kind == "osv"
    assert array.digest != archive.digest
    assert array.index == archive.index
    assert array.releases == {"bookworm", "trixie"}


def test_an_osv_dsa_and_its_cve_record_are_one_advisory(tmp_path: Path) -> None:
    db = vulndb.load(_write_zip(tmp_path / "all.zip", OSV))
    ssl = {a.id: a for a in db.advisories("bookworm", "openssl")}
    assert sorted(ssl) == ["CVE-2024-0001", "CVE-2024-0007"]
    assert ssl["CVE-2024-0001"].aliases == ("DEBIAN-CVE-2024-0001", "DSA-5678-1")
    assert (ssl["CVE-2024-0001"].fixed, ssl["CVE-2024-0001"].severity) == (NEW_SSL, "high")
    assert ssl["CVE-2024-0007"].aliases == ("DSA-5678-1",)
    assert ssl["CVE-2024-0007"].severity == "unknown"  # a DSA carries no assessment
    findings = vulns.match(db, "bookworm", _image(OLD_SSL))
    assert [f.id for f in findings if f.source == "openssl"] == ["CVE-2024-0001", "CVE-2024-0007"]


def test_osv_severity_comes_from_the_cvss_v3_score_without_an_urgency(tmp_path: Path) -> None:
    db = vulndb.load(_write_json(tmp_path / "osv.json", OSV))
    zlib = {a.id: a for a in db.advisories("bookworm", "zlib")}
    assert {k: (a.severity, a.fixed, a.not_affected) for k, a in zlib.items()} == {
        "CVE-2024-0010": ("critical", None, False),
        "CVE-2024-0011": ("high", "1:1.2.13.dfsg-1+deb12u1", False),
        "CVE-2024-0012": ("medium", None, False),
        "CVE-2024-0013": ("low", None, False),
        "CVE-2024-0014": ("unknown", None, True),
    }  # withdrawn 0015 and Ubuntu's 0016 are not there


# matching and the gate ---------------------------------------------------------------------


def test_a_version_before_the_fix_is_fixable_and_fails_a_high_gate(tracker: VulnDB) -> None:
    findings = vulns.match(tracker, "bookworm", _image(OLD_SSL))
    found = _by_id(findings)
    f = found["CVE-2024-0001"]
    assert (f.status, f.installed, f.fixed, f.severity) == ("fixable", OLD_SSL, NEW_SSL, "high")
    assert f.packages == ("libssl3", "openssl")
    assert f.purls == (
        f"pkg:deb/debian/libssl3@{OLD_SSL}?arch=amd64&distro=debian-12",
        f"pkg:deb/debian/libssl3@{OLD_SSL}?arch=i386&distro=debian-12",
        f"pkg:deb/debian/openssl@{OLD_SSL}?arch=amd64&distro=debian-12",
    )
    assert {k: f.status for k, f in found.items()} == {
        "CVE-2024-0001": "fixable", "CVE-2024-0002": "no-fix", "CVE-2024-0003": "no-fix",
        "CVE-2024-0004": "not-affected", "CVE-2024-0006": "no-fix",
        "TEMP-0000000-ABCDEF": "fixable",
    }  # fmt: skip
    # gravest first, then by id
    order = ["CVE-2024-0001", "CVE-2024-0006", "CVE-2024-0002", "CVE-2024-0004",
             "TEMP-0000000-ABCDEF", "CVE-2024-0003"]  # fmt: skip
    assert [f.id for f in findings] == order
    verdict = vulns.gate(findings, "high", True, [], TODAY)
    assert [f.id for f in verdict.failing] == ["CVE-2024-0001"]
    assert verdict.message() == (
        "the vulnerability gate failed: 1 finding at or above high with a fix in the suite, "
        f"the worst CVE-2024-0001 (high) in openssl {OLD_SSL}, fixed in {NEW_SSL}"
    )


def test_at_the_fixed_version_the_issue_is_not_reported(tracker: VulnDB) -> None:
    findings = vulns.match(tracker, "bookworm", _image(NEW_SSL))
    assert "CVE-2024-0001" not in _by_id(findings)
    verdict = vulns.gate(findings, "high", True, [], TODAY)
    assert verdict.failing == [] and verdict.message() is None


def test_no_fix_findings_fail_only_when_not_fixable_only(tracker: VulnDB) -> None:
    findings = vulns.match(tracker, "bookworm", _image(NEW_SSL))
    assert vulns.gate(findings, "high", True, [], TODAY).failing == []
    verdict = vulns.gate(findings, "high", False, [], TODAY)
    assert [f.id for f in verdict.failing] == ["CVE-2024-0006"]
    assert verdict.message() == (
        "the vulnerability gate failed: 1 finding at or above high, the worst CVE-2024-0006 "
        f"(high) in openssl {NEW_SSL}, with no fix yet"
    )


def test_unknown_severity_does_not_trip_any_assessed_threshold(tracker: VulnDB) -> None:
    findings = vulns.match(tracker, "bookworm", _image(NEW_SSL))
    zlib = _by_id(findings)["TEMP-0000000-ABCDEF"]
    assert (zlib.severity, zlib.status) == ("unknown", "fixable")
    for threshold in ("critical", "high", "medium", "low"):
        assert zlib not in vulns.gate(findings, threshold, True, [], TODAY).failing
    assert vulns.gate(findings, "unknown", True, [], TODAY).failing == [zlib]


def test_not_affected_never_fails_and_no_threshold_never_fails(tracker: VulnDB) -> None:
    findings = vulns.match(tracker, "bookworm", _image(OLD_SSL))
    everything = vulns.gate(findings, "none", False, [], TODAY).failing
    assert "CVE-2024-0004" not in {f.id for f in everything}
    assert len(everything) == len(findings) - 1
    assert vulns.gate(findings, None, False, [], TODAY).failing == []
    with pytest.raises(InputError, match="fail_on 'severe'"):
        vulns.gate(findings, "severe", False, [], TODAY)


def test_an_ignore_passes_the_gate_until_its_date_and_then_no_longer(tracker: VulnDB) -> None:
    findings = vulns.match(tracker, "bookworm", _image(OLD_SSL))
    until = TODAY + timedelta(days=30)
    ignore = Ignore("CVE-2024-0001", "the X.509 parser is not reachable: no TLS client", until)
    for day in (TODAY, until):  # the last day still counts
        verdict = vulns.gate(findings, "high", True, [ignore], day)
        assert verdict.failing == [] and verdict.expired == []
        assert [(f.id, i) for f, i in verdict.ignored] == [("CVE-2024-0001", ignore)]
        assert verdict.message() is None
    later = vulns.gate(findings, "high", True, [ignore], until + timedelta(days=1))
    assert [f.id for f in later.failing] == ["CVE-2024-0001"]
    assert later.expired == [ignore] and later.ignored == []
    assert (later.message() or "").endswith(f"(its ignore expired on {until.isoformat()})")
    with pytest.raises(InputError, match="gives no reason"):
        Ignore("CVE-2024-0001", " ", until)


def test_an_ignore_may_name_the_dsa_for_its_cves(tmp_path: Path) -> None:
    db = vulndb.load(_write_json(tmp_path / "osv.json", OSV))
    findings = vulns.match(db, "bookworm", _image(OLD_SSL))
    ignore = Ignore("DSA-5678-1", "the update ships next week", TODAY)
    verdict = vulns.gate(findings, "high", True, [ignore], TODAY)
    assert [f.id for f, _ in verdict.ignored] == ["CVE-2024-0001"]
    assert [f.id for f in verdict.failing] == ["CVE-2024-0011"]


def test_counts_tally_every_severity_and_status(tracker: VulnDB) -> None:
    c = vulns.counts(vulns.match(tracker, "bookworm", _image(OLD_SSL)))
    assert list(c) == ["critical", "high", "medium", "low", "unknown", "none"]
    assert c["high"] == {"fixable": 1, "no-fix": 1, "not-affected": 0}
    assert c["low"] == {"fixable": 0, "no-fix": 1, "not-affected": 1}
    assert c["unknown"]["fixable"] == c["none"]["no-fix"] == 1
    assert sum(n for by in c.values() for n in by.values()) == 6


# the report --------------------------------------------------------------------------------


def _report(db: VulnDB, packages: list[Package]) -> bytes:
    findings = vulns.match(db, "bookworm", packages)
    return vulns.report(findings, "web", IMAGE, db.digest, db.kind, "bookworm")


def test_the_same_image_and_snapshot_give_a_byte_identical_report(tmp_path: Path) -> None:
    path = _write_json(tmp_path / "tracker.json", TRACKER)
    first = _report(vulndb.load(path), _image(OLD_SSL))
    again = _report(vulndb.load(path), list(reversed(_image(OLD_SSL))))
    assert first == again


def test_the_report_validates_and_names_the_image_and_snapshot(tracker: VulnDB) -> None:
    findings = vulns.match(tracker, "bookworm", _image(OLD_SSL))
    data = vulns.report(findings, "web", IMAGE, tracker.digest, tracker.kind, "bookworm")
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(data.decode()) is None
    doc = json.loads(data)
    assert "timestamp" not in doc["metadata"]
    assert doc["metadata"]["component"]["hashes"] == [{"alg": "SHA-256", "content": "3f" * 32}]
    vulns_by_id = {v["id"]: v for v in doc["vulnerabilities"]}
    v = vulns_by_id["CVE-2024-0001"]
    url = "https://security-tracker.debian.org/tracker/CVE-2024-0001"
    assert v["source"] == {"name": "Debian Security Tracker", "url": url}
    assert v["ratings"][0]["severity"] == "high"
    assert v["analysis"] == {"state": "in_triage"}
    assert [a["ref"] for a in v["affects"]] == list(_by_id(findings)["CVE-2024-0001"].purls)
    props = {p["name"]: p["value"] for p in v["properties"]}
    assert props == {"baker:vuln:status": "fixable", "baker:vuln:source": "openssl",
                     "baker:vuln:installed-version": OLD_SSL,
                     "baker:vuln:fixed-version": NEW_SSL}  # fmt: skip
    assert vulns_by_id["CVE-2024-0004"]["analysis"]["state"] == "not_affected"
    refs = {c["bom-ref"] for c in doc["components"]}
    assert {a["ref"] for v in doc["vulnerabilities"] for a in v["affects"]} <= refs

    summary = vulns.read_report(data)
    assert (summary.image_digest, summary.db_digest, summary.db_kind, summary.release) == (
        IMAGE, tracker.digest, "debian-tracker", "bookworm"
    )  # fmt: skip
    assert summary.counts == vulns.counts(findings)


def test_an_osv_report_links_osv_and_an_empty_one_is_valid(tmp_path: Path) -> None:
    db = vulndb.load(_write_zip(tmp_path / "all.zip", OSV))
    doc = json.loads(_report(db, _image(OLD_SSL)))
    v = next(v for v in doc["vulnerabilities"] if v["id"] == "CVE-2024-0001")
    assert v["source"]["url"] == "https://osv.dev/vulnerability/CVE-2024-0001"
    assert [r["id"] for r in v["references"]] == ["DEBIAN-CVE-2024-0001", "DSA-5678-1"]
    empty = vulns.report([], "web", IMAGE, db.digest, db.kind, "bookworm")
    assert json.loads(empty)["vulnerabilities"] == []
    assert vulns.read_report(empty).counts == vulns.counts([])


def test_read_report_refuses_what_is_not_a_vulnerability_report() -> None:
    with pytest.raises(InputError, match="not valid CycloneDX"):
        vulns.read_report(b"{not json")
    sbom = {"bomFormat": "CycloneDX", "specVersion": "1.6", "version": 1}
    with pytest.raises(InputError, match="names no snapshot"):
        vulns.read_report(json.dumps(sbom).encode())


# bad snapshots -----------------------------------------------------------------------------


def _refused(path: Path, **kwargs: Any) -> str:
    with pytest.raises(InputError) as e:
        vulndb.load(path, **kwargs)
    message = str(e.value)
    assert str(path) in message and "\n" not in message and message.endswith(".")
    return message


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"<html><body>502 Bad Gateway</body></html>", "neither a JSON object"),
        (b"", "neither a JSON object"),
        (b'{"openssl": {"CVE-2024-0001": {"releases": {"bookworm": ', "not JSON"),
        (b'{"openssl": {"CVE-2024-0001": {}}} trailing', "not JSON"),
        (b"\xff\xfe{}", "neither JSON nor a zip"),
        (b'{"openssl": ["CVE-2024-0001"]}', "'openssl' is a list"),
        (b'{"openssl": {"CVE-2024-0001": {"releases": ["bookworm"]}}}', "no releases object"),
        (b'[{"affected": []}]', "without an id"),
        (b'[{"id": "DSA-1-1", "affected": [{"ranges": []}]}]', "without a package"),
        (b"{}", "holds no advisories"),
        (b"[]", "holds no advisories"),
        (b"PK\x03\x04 not really a zip", "not a readable zip"),
    ],
)
def test_a_bad_snapshot_is_refused_in_one_sentence(
    tmp_path: Path, content: bytes, why: str
) -> None:
    path = tmp_path / "snapshot.json"
    path.write_bytes(content)
    assert why in _refused(path)


def test_an_oversized_zip_member_or_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "all.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("DSA-5678-1.json", json.dumps(OSV[0]))
        z.writestr("DEBIAN-CVE-2024-9999.json", b" " * (vulndb.MAX_MEMBER + 1))
    assert path.stat().st_size < 1 << 20  # compressed, it is small: the bound is on unpacking
    assert "member DEBIAN-CVE-2024-9999.json unpacks to" in _refused(path)
    big = _write_json(tmp_path / "tracker.json", TRACKER)
    assert "over the limit of 100" in _refused(big, limit=100)
    bad_member = _write_zip(tmp_path / "bad.zip", [{"id": "x"}])
    with zipfile.ZipFile(bad_member, "a") as z:
        z.writestr("DSA-1-1.json", "{")
    assert "member DSA-1-1.json is not JSON" in _refused(bad_member)


def test_a_missing_snapshot_is_an_input_error(tmp_path: Path) -> None:
    assert "No such file" in _refused(tmp_path / "absent.json")


# fetching ----------------------------------------------------------------------------------


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A local HTTP server on 127.0.0.1 serving a directory: (base URL, directory)."""
    root = tmp_path / "www"
    root.mkdir()

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_fetch_writes_the_snapshot_and_returns_its_digest(
    served: tuple[str, Path], tmp_path: Path
) -> None:
    base, root = served
    served_file = _write_json(root / "json", TRACKER)
    dest = tmp_path / "snap"
    dest.mkdir()
    to = dest / "tracker.json"
    digest = vulndb.fetch(f"{base}/json", to, timeout=10)
    assert digest == "sha256:" + hashlib.sha256(served_file.read_bytes()).hexdigest()
    assert to.read_bytes() == served_file.read_bytes()
    assert to.stat().st_mode & 0o777 == 0o644
    assert vulndb.load(to).digest == digest
    assert list(dest.iterdir()) == [to]


@pytest.mark.parametrize(
    ("name", "content", "error", "why"),
    [
        ("absent", None, BuildError, "HTTP 404"),
        ("page.html", b"<html>maintenance</html>", InputError, "no usable vulnerability database"),
        ("json", json.dumps(TRACKER).encode(), InputError, "over the limit"),
    ],
)
def test_a_failed_fetch_leaves_nothing_behind(
    served: tuple[str, Path],
    tmp_path: Path,
    name: str,
    content: bytes | None,
    error: type[BakerError],
    why: str,
) -> None:
    base, root = served
    if content is not None:
        (root / name).write_bytes(content)
    dest = tmp_path / "snap"
    dest.mkdir()
    with pytest.raises(error, match=why) as e:
        vulndb.fetch(f"{base}/{name}", dest / "tracker.json", timeout=10, limit=1000)
    assert f"{base}/{name}" in str(e.value) and "\n" not in str(e.value)
    assert list(dest.iterdir()) == []


def test_fetch_refuses_a_url_that_is_not_http(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not an http"):
        vulndb.fetch("file:///etc/passwd", tmp_path / "x.json")
    assert list(tmp_path.iterdir()) == []


def test_an_ubuntu_image_is_not_scanned_against_debians_snapshot(tmp_path: Path) -> None:
    """Debian's tracker and OSV's Debian records know nothing of Ubuntu's packages: a scan of
    an Ubuntu image is refused, never reported clean."""
    db = tmp_path / "tracker.json"
    db.write_text("{}")
    with pytest.raises(InputError) as e:
        vulns.scan(db, "noble", [], "on-ubuntu", "sha256:" + "a" * 64)
    assert str(e.value) == (
        f"{db}: noble is Ubuntu's, and the snapshots baker reads are Debian's: an Ubuntu image "
        "cannot be scanned yet."
    )


def test_baker_scan_of_an_ubuntu_artifact_is_refused_naming_it(tmp_path: Path) -> None:
    from baker.security import published

    sbom = tmp_path / "sbom.cdx.json"
    purl = "pkg:deb/ubuntu/bash@5.2.21-2ubuntu4?arch=amd64&distro=ubuntu-24.04"
    sbom.write_text(json.dumps({"components": [{"name": "bash", "purl": purl}]}))
    with pytest.raises(InputError) as e:
        published.packages(tmp_path)
    assert str(e.value) == (
        f"{sbom}: the image is Ubuntu's (ubuntu-24.04), and the snapshots baker reads are "
        "Debian's: an Ubuntu image cannot be scanned yet."
    )

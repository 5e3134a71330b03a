"""The scan step in the one pipeline, through the fake backend (its image holds one package,
fake-base 1.0), against snapshots in the Debian Security Tracker's format made here: the
report is published, recorded, named in the provenance and checked by verify; a fixable
finding at the threshold fails the build and publishes nothing; an ignore with a reason lets
it pass until its date; `baker scan` and `baker inspect` read the same."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console
from support.recipe_files import WriteRecipe

from baker import recipe
from baker.artifact import read_record, read_sums
from baker.backends.fake import FakeBackend
from baker.build.options import Options, Result
from baker.build.pipeline import build
from baker.cache import Cache
from baker.errors import BuildError, InputError
from baker.evidence.verify import verify
from baker.progress import Reporter

# (A provisioner, so that the fake's disk has an /etc for the capture to write into.)
RECIPE = """\
name: scanned
base:
  boot: bios
provisioners:
  - inline: echo hello
scan:
  db: tracker.json
"""


def _tracker(fixed: str, urgency: str = "high") -> str:
    release = {"status": "resolved", "repositories": {"bookworm": "1.0"},
               "fixed_version": fixed, "urgency": urgency}  # fmt: skip
    open_one = {"status": "open", "repositories": {"bookworm": "1.0"}, "urgency": "low"}
    return json.dumps({"fake-base": {
        "CVE-2026-0001": {"description": "a flaw", "scope": "remote",
                          "releases": {"bookworm": release}},
        "CVE-2026-0002": {"description": "another", "scope": "local",
                          "releases": {"bookworm": open_one}},
    }})  # fmt: skip


def _build(tmp_path: Path, spec: recipe.Spec, vuln_db: Path | None = None) -> Result:
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    options = Options(out=tmp_path / "out", cache=Cache(tmp_path / "cache"), work_root=work,
                      measure=False, vuln_db=vuln_db)  # fmt: skip
    reporter = Reporter(Console(file=io.StringIO()))
    return build(spec, options, reporter, FakeBackend(hands_back="disk"))


def test_the_report_is_published_recorded_and_verified(
    write_recipe: WriteRecipe, tmp_path: Path
) -> None:
    spec = recipe.load(write_recipe(RECIPE, {"tracker.json": _tracker("1.1")}))
    result = _build(tmp_path, spec)
    a = result.artifact
    report = json.loads((a / "vulns.cdx.json").read_text())
    assert report["metadata"]["component"]["version"] == result.digest.removeprefix("sha256:")
    assert [v["id"] for v in report["vulnerabilities"]] == ["CVE-2026-0001", "CVE-2026-0002"]
    assert "vulns.cdx.json" in read_sums(a)
    scan = read_record(a).scan or {}
    assert scan["counts"]["high"]["fixable"] == 1 and scan["counts"]["low"]["no-fix"] == 1
    assert scan["db"]["kind"] == "debian-tracker" and scan["fail_on"] is None
    provenance = json.loads((a / "provenance.json").read_text())["predicate"]
    deps = {d["name"]: d for d in provenance["buildDefinition"]["resolvedDependencies"]}
    assert deps["vulnerability database"]["digest"]["sha256"] == scan["db"]["digest"][7:]
    (byproduct,) = provenance["runDetails"]["byproducts"]
    assert byproduct["name"] == "vulns.cdx.json"
    assert {f.name: f.ok for f in verify(a, None)}["vulns.cdx.json"] is True
    # The same image and snapshot: the same bytes, here through `baker scan`.
    again = tmp_path / "again.json"
    proc = _baker("scan", a, "--vuln-db", tmp_path / "tracker.json", "--report", again)
    assert proc.returncode == 0, proc.stderr
    assert again.read_bytes() == (a / "vulns.cdx.json").read_bytes()
    assert "high     CVE-2026-0001      fake-base 1.0: fixed in 1.1" in proc.stdout
    shown = _baker("inspect", a).stdout
    assert "  vulns     1 high (1 fixable), 1 low (0 fixable), against sha256:" in shown
    failing = _baker("scan", a, "--vuln-db", tmp_path / "tracker.json", "--fail-on", "high")
    assert failing.returncode == 1
    assert failing.stderr.startswith("baker: error: the vulnerability gate failed: 1 finding ")


def test_a_fixable_finding_at_the_threshold_fails_and_an_ignore_lets_it_pass(
    write_recipe: WriteRecipe, tmp_path: Path
) -> None:
    gated = RECIPE + "  fail_on: high\n"
    spec = recipe.load(write_recipe(gated, {"tracker.json": _tracker("1.1")}))
    with pytest.raises(BuildError, match=r"^the vulnerability gate failed: 1 finding at or "
                       r"above high with a fix in the suite, the worst CVE-2026-0001 \(high\) in "
                       r"fake-base 1\.0, fixed in 1\.1; nothing was published\.$"):  # fmt: skip
        _build(tmp_path, spec)
    assert not (tmp_path / "out" / "scanned").exists()
    ignored = gated + (
        "  ignore:\n    - {id: CVE-2026-0001, reason: not reachable here, until: 2999-01-01}\n"
    )
    result = _build(tmp_path, recipe.load(write_recipe(ignored)))
    scan = read_record(result.artifact).scan or {}
    assert scan["ignored"] == [{"id": "CVE-2026-0001", "reason": "not reachable here",
                                "until": "2999-01-01"}]  # fmt: skip
    expired = ignored.replace("2999-01-01", "2020-01-01")
    with pytest.raises(BuildError, match=r"its ignore expired on 2020-01-01"):
        _build(tmp_path, recipe.load(write_recipe(expired)))


def test_at_the_fixed_version_nothing_is_reported(
    write_recipe: WriteRecipe, tmp_path: Path
) -> None:
    gated = RECIPE + "  fail_on: low\n  fixable_only: false\n"
    db = json.loads(_tracker("1.0"))
    del db["fake-base"]["CVE-2026-0002"]
    spec = recipe.load(write_recipe(gated, {"tracker.json": json.dumps(db)}))
    report = json.loads((_build(tmp_path, spec).artifact / "vulns.cdx.json").read_text())
    assert report.get("vulnerabilities", []) == []


def test_a_snapshot_that_is_not_there_or_not_for_the_suite_is_refused(
    write_recipe: WriteRecipe, tmp_path: Path
) -> None:
    with pytest.raises(InputError, match=r"recipe\.yaml:7: scan\.db: no such file tracker\.json"):
        _build(tmp_path, recipe.load(write_recipe(RECIPE)))
    with pytest.raises(InputError, match=r"^--vuln-db .*nope\.json: no such file\.$"):
        _build(tmp_path, recipe.load(write_recipe("name: x\n")), tmp_path / "nope.json")
    trixie = _tracker("1.1").replace('"bookworm"', '"trixie"')
    spec = recipe.load(write_recipe(RECIPE, {"tracker.json": trixie}))
    with pytest.raises(InputError, match=r"tracker\.json: the snapshot says nothing of Debian "
                       r"bookworm\.$"):  # fmt: skip
        _build(tmp_path, spec)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def _baker(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "baker", *map(str, args)],
                          capture_output=True, text=True)  # fmt: skip


def test_scan_and_fetch_refuse_what_they_cannot_do_in_one_line(tmp_path: Path) -> None:
    nothing = _baker("scan", tmp_path)
    assert nothing.returncode == 2
    assert nothing.stderr == (
        "baker: error: give --vuln-db FILE to scan the packages, --secrets for the image, or "
        "both.\n"
    )
    into_dir = _baker("vulndb", "fetch", "--to", tmp_path)
    assert into_dir.returncode == 2
    assert into_dir.stderr.startswith("baker: error: --to ") and "a directory" in into_dir.stderr
    # Nothing listens on port 9 (discard) here: the download fails, and leaves nothing.
    refused = _baker("vulndb", "fetch", "--to", tmp_path / "db.json", "--url",
                     "http://127.0.0.1:9/json")  # fmt: skip
    assert refused.returncode == 1
    assert refused.stderr.startswith("baker: error: cannot download http://127.0.0.1:9/json: ")
    assert len(refused.stderr.splitlines()) == 1
    assert list(tmp_path.iterdir()) == []  # no partial file, no temporary one


def test_an_ubuntu_image_is_refused_a_scan_before_the_build_starts(
    write_recipe: WriteRecipe, tmp_path: Path
) -> None:
    """Debian's tracker says nothing of Ubuntu's packages: a scan of an Ubuntu image would
    report it clean, so it is refused before anything runs, by scan.db or by --vuln-db."""
    from baker.build.steps import scan

    text = RECIPE.replace(
        "  boot: bios\n", f"  suite: noble\n  image: noble.img\n  sha256: {'a' * 64}\n"
    )
    path = write_recipe(text, {"tracker.json": _tracker("1.1"), "noble.img": "disk"})
    spec = recipe.load(path)
    why = (
        "noble is Ubuntu's, and the snapshots baker reads are Debian's: an Ubuntu image cannot "
        "be scanned yet."
    )
    with pytest.raises(InputError) as e:
        scan.snapshot(spec, None)
    assert str(e.value) == f"{path}:9: scan.db: {why}"
    db = tmp_path / "tracker.json"
    with pytest.raises(InputError) as e:
        scan.snapshot(spec, db)
    assert str(e.value) == f"--vuln-db {db}: {why}"

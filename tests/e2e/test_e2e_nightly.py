"""Three nights of two small recipes, as CI runs them: the first builds both; the second,
with nothing changed, reuses both from the step cache and records "unchanged"; the third,
after one recipe's provisioned file changed, rebuilds that one only, and its drift report
names the file. The history is a real PostgreSQL server; the report site is opened in
headless Chromium, which must render the charts without a console error."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import time
from pathlib import Path
from xml.etree import ElementTree

import pytest
from support import pg_server
from support.bakerun import run_baker

from baker.nightly.history import History

pytestmark = pytest.mark.e2e

# The smallest images that show the point: BIOS only, one measured boot, no tests.
RECIPE = """\
name: {name}
base:
  boot: bios
boot_runs: 1
nightly:
  max_boot_regression_pct: 200
provisioners:
  - file: ../files/{name}.txt
    sha256: {sha256}
    dest: /etc/{name}.txt
"""


def _write(root: Path, name: str, text: str) -> Path:
    """The recipe and its provisioned file, pinned by digest as a team commits them."""
    (root / "files" / f"{name}.txt").write_text(text)
    recipe = root / "images" / f"{name}.yaml"
    recipe.write_text(RECIPE.format(name=name, sha256=hashlib.sha256(text.encode()).hexdigest()))
    return recipe


@pytest.fixture(scope="module")
def postgres():
    pg = pg_server.start()
    yield pg
    pg.stop()


@pytest.fixture(scope="module")
def nights(tmp_path_factory: pytest.TempPathFactory, work_root: Path, postgres, signing_key: Path):
    root = tmp_path_factory.mktemp("nightly")
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    (root / "images").mkdir()
    (root / "files").mkdir()
    recipes = []
    for name in ("night-a", "night-b"):
        recipes.append(_write(root, name, f"{name}, first version\n"))
    out, report, work = root / "out", root / "report", work_root / "nightly"
    work.mkdir(mode=0o711)

    def night(n: int) -> tuple[subprocess.CompletedProcess[str], float]:
        started = time.monotonic()
        proc = run_baker(
            "nightly",
            *recipes,
            "--out",
            out,
            "--history",
            postgres.url,
            "--report",
            report,
            "--junit",
            root / f"night-{n}.xml",
            "--sign-key",
            signing_key,
            work=work,
        )
        return proc, time.monotonic() - started

    first = night(1)
    second = night(2)
    _write(root, "night-b", "night-b, second version\n")
    third = night(3)
    return {
        "root": root,
        "out": out,
        "report": report,
        "runs": [first, second, third],
        "pg": postgres,
    }


def _lines(proc: subprocess.CompletedProcess[str]) -> dict[str, str]:
    return {line.split()[0]: line for line in proc.stdout.strip().splitlines()}


def test_first_night_builds_both(nights) -> None:
    proc, _ = nights["runs"][0]
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = _lines(proc)
    assert lines["night-a"].startswith("night-a built sha256:")
    assert lines["night-b"].startswith("night-b built sha256:")
    for name in ("night-a", "night-b"):
        assert (nights["out"] / name / "image.qcow2").is_file()
    assert not [p for p in nights["out"].iterdir() if p.name.startswith(".nightly-")]


def test_a_night_with_nothing_changed_is_unchanged_and_costs_a_fraction(nights) -> None:
    (first, first_s), (second, second_s) = nights["runs"][0], nights["runs"][1]
    assert second.returncode == 0, second.stderr[-3000:]
    lines = _lines(second)
    for name in ("night-a", "night-b"):
        assert lines[name].startswith(f"{name} unchanged ")
        assert lines[name].split()[2] == _lines(first)[name].split()[2]  # last night's digest
    # The figure is quoted in the closing note; the test asserts the kind, not a time.
    print(
        f"\nnight 1: {first_s:.1f} s, night 2 (unchanged): {second_s:.1f} s "
        f"({second_s / first_s:.3f} of the first)"
    )
    assert "boot:" not in second.stderr  # no build machine was started


def test_a_changed_provisioned_file_rebuilds_that_recipe_only(nights) -> None:
    third, _ = nights["runs"][2]
    assert third.returncode == 0, third.stderr[-3000:]
    lines = _lines(third)
    assert lines["night-a"].startswith("night-a unchanged ")
    assert lines["night-b"].startswith("night-b built ")
    history = History(nights["pg"].url)
    try:
        rows = history.all("night-b")
        assert [r["status"] for r in rows] == ["built", "unchanged", "built"]
        drift = rows[-1]["drift"]
        assert {"path": "/etc/night-b.txt", "kind": "changed"} in drift["files"]
        assert drift["packages"]["upgraded"] == [] and drift["size"]["old"] > 0
        assert rows[-1]["boot_median_s"] > 0 and rows[-1]["signer"]
        assert [r["status"] for r in history.all("night-a")] == ["built", "unchanged", "unchanged"]
    finally:
        history.close()
    assert "/etc/night-b.txt" in third.stderr  # the plain-text drift report in the CI log


def test_junit_has_one_case_per_recipe(nights) -> None:
    suite = ElementTree.parse(nights["root"] / "night-3.xml").getroot()
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    assert set(cases) == {"night-a", "night-b"}
    assert suite.get("failures") == "0"
    assert "built sha256:" in (cases["night-b"].findtext("system-out") or "")


def test_the_report_site_renders_in_chromium_with_its_charts(nights, tmp_path: Path) -> None:
    report = nights["report"]
    index, page = report / "index.html", report / "night-b.html"
    assert "night-b rebuilt" in index.read_text()
    chromium = shutil.which("chromium")
    assert chromium, "chromium is not installed: run scripts/setup-host.sh"
    base = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--enable-logging=stderr",
        "--v=0",
        "--window-size=1200,900",
    ]
    for target in (index, page):
        shot = tmp_path / f"{target.stem}.png"
        proc = subprocess.run(
            [*base, f"--screenshot={shot}", target.as_uri()],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert shot.is_file() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", proc.stderr[-2000:]
        assert shot.stat().st_size > 10_000  # a page with text and charts, not a blank one
        console = [line for line in proc.stderr.splitlines() if "CONSOLE(" in line]
        assert console == [], console
    dom = subprocess.run(
        [*base, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120
    ).stdout
    assert dom.count("<svg") == 3 and "<polyline" in dom
    assert "/etc/night-b.txt" in dom
    shutil.copy(tmp_path / "index.png", Path("/tmp/baker-nightly-index.png"))

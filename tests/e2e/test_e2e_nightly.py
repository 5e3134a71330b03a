"""Three nights of two small recipes, as CI runs them, night-b built on night-a (`base.image:
recipe:night-a.yaml`): the first builds both, the parent first; the second, with nothing
changed, reuses both from the step cache and records "unchanged"; the third, after the
parent's provisioned file changed, rebuilds the parent and its child on it, and both drift
reports name the file. (That an unchanged recipe is not rebuilt is the second night's point;
a night of its own for a changed child alone cost two minutes of the suite.) night-a also
takes a build secret, which reaches its machine and nowhere else.
The history is a real PostgreSQL server; the report site is opened in headless Chromium,
which must render the charts and the tree of images without a console error."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import shutil
import subprocess
import time
from pathlib import Path
from xml.etree import ElementTree

import pytest
from support import pg_server
from support.bakerun import run_baker

from baker.inspect import disk
from baker.nightly.history import History

pytestmark = pytest.mark.e2e

# The smallest images that show the point: BIOS only, no cloud-init, one measured boot, no
# tests.
RECIPE = """\
name: {name}
base:
  boot: bios
  cloud_init: false
boot_runs: 1
nightly:
  max_boot_regression_pct: 200
provisioners:
  - file: ../files/{name}.txt
    sha256: {sha256}
    dest: /etc/{name}.txt
"""


# night-a also takes a build secret: its provisioner gets the value and leaves only its hash.
SECRET = "night-Secret-Value-8086"
WITH_SECRET = """\
  - inline: printf '%s' "$NIGHT_TOKEN" | sha256sum | cut -d' ' -f1 >/etc/night-token.sha256
    secrets: [NIGHT_TOKEN]
secrets:
  NIGHT_TOKEN: {env: E2E_NIGHT_TOKEN}
"""

# The child: night-a's image as its base, trusted by the key the night signs with.
ON_PARENT = "base:\n  image: recipe:night-a.yaml\n  trust: ../keys/baker.pub\n  boot: bios\n"


def _write(root: Path, name: str, text: str) -> Path:
    """The recipe and its provisioned file, pinned by digest as a team commits them."""
    (root / "files" / f"{name}.txt").write_text(text)
    recipe = root / "images" / f"{name}.yaml"
    body = RECIPE.format(name=name, sha256=hashlib.sha256(text.encode()).hexdigest())
    if name == "night-b":
        body = body.replace("base:\n  boot: bios\n  cloud_init: false\n", ON_PARENT)
    else:
        body += WITH_SECRET
    recipe.write_text(body)
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
    (root / "keys").mkdir()
    shutil.copy(signing_key.with_name("baker.pub"), root / "keys" / "baker.pub")
    recipes = []
    for name in ("night-b", "night-a"):  # the child first: the night orders them
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

    with pytest.MonkeyPatch.context() as secret:
        secret.setenv("E2E_NIGHT_TOKEN", SECRET)  # the nights' builds inherit it
        first = night(1)
        # What the child recorded of its parent that night (OUT/NAME moves on with the nights).
        first_parent = json.loads((out / "night-b" / "build.json").read_text())["parent"]
        second = night(2)
        digests = {n: _digest(out / n) for n in ("night-a", "night-b")}
        _write(root, "night-a", "night-a, second version\n")
        third = night(3)
    return {
        "root": root,
        "out": out,
        "report": report,
        "runs": [first, second, third],
        "first_parent": first_parent,
        "second_digests": digests,
        "pg": postgres,
    }


def _digest(artifact: Path) -> str:
    return str(json.loads((artifact / "build.json").read_text())["image"]["digest"])


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
    # The child was built on the parent the same night made, after it.
    said = proc.stderr
    assert said.index("[night-a] baker: published") < said.index("[night-b] baker: baking")
    parent = nights["first_parent"]
    assert parent["name"] == "night-a" and parent["digest"] == lines["night-a"].split()[2]


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


def test_a_changed_parent_is_rebuilt_and_its_child_on_it(nights) -> None:
    third, _ = nights["runs"][2]
    assert third.returncode == 0, third.stderr[-3000:]
    lines = _lines(third)
    assert lines["night-a"].startswith("night-a built ")
    assert lines["night-b"].startswith("night-b built ")
    before = nights["second_digests"]
    assert lines["night-b"].split()[2] != before["night-b"]
    record = json.loads((nights["out"] / "night-b" / "build.json").read_text())
    assert record["parent"]["digest"] == lines["night-a"].split()[2] != before["night-a"]
    history = History(nights["pg"].url)
    try:
        for name in ("night-a", "night-b"):
            rows = history.all(name)
            assert [r["status"] for r in rows] == ["built", "unchanged", "built"]
            # The parent's changed file, in its own drift report and in its child's.
            drift = rows[2]["drift"]
            assert {"path": "/etc/night-a.txt", "kind": "changed"} in drift["files"]
            assert drift["packages"]["upgraded"] == [] and drift["size"]["old"] > 0
            assert rows[2]["boot_median_s"] > 0 and rows[2]["signer"]
        assert history.all("night-b")[2]["parent"] == "night-a"
    finally:
        history.close()
    assert "/etc/night-a.txt" in third.stderr  # the plain-text drift report in the CI log


def test_a_build_secret_reaches_the_machine_and_nowhere_else(nights, tmp_path: Path) -> None:
    """In night-a's image is the hash its provisioner made of the value, so the value was
    there; the value itself, raw or in base64, is in no file of the image or the artifact,
    and in no line any night printed."""
    value = SECRET.encode()
    forms = [value, *(base64.b64encode(b"\0" * k + value)[4:-4] for k in range(3))]
    artifact = nights["out"] / "night-a"
    for f in artifact.iterdir():
        assert not any(x in f.read_bytes() for x in forms), f
    for proc, _ in nights["runs"]:
        assert SECRET not in proc.stdout + proc.stderr
    record = json.loads((artifact / "build.json").read_text())
    assert record["secrets"] == {"NIGHT_TOKEN": "env:E2E_NIGHT_TOKEN"}
    with contextlib.ExitStack() as stack:
        root = disk.open_image(artifact / "image.qcow2", "night-a", tmp_path, stack).root
        hashed = (root / "etc" / "night-token.sha256").read_text().strip()
        assert hashed == hashlib.sha256(value).hexdigest()
        patterns = [arg for x in forms for arg in ("-e", x.decode())]
        grep = subprocess.run(["grep", "-rlaF", "--devices=skip", *patterns, str(root)],
                              capture_output=True, text=True)  # fmt: skip
        assert grep.returncode == 1 and grep.stdout == "", grep.stdout  # 1: nothing found


def test_junit_has_one_case_per_recipe(nights) -> None:
    suite = ElementTree.parse(nights["root"] / "night-3.xml").getroot()
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    assert set(cases) == {"night-a", "night-b"}
    assert suite.get("failures") == "0"
    assert "built sha256:" in (cases["night-b"].findtext("system-out") or "")


def test_the_report_site_renders_in_chromium_with_its_charts(nights, tmp_path: Path) -> None:
    report = nights["report"]
    index, page = report / "index.html", report / "night-b.html"
    shown = index.read_text()
    assert "night-b rebuilt on night-a" in shown and "night-a rebuilt" in shown
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
    assert "/etc/night-a.txt" in dom  # night-b's drift: its parent's file changed
    tree = subprocess.run(
        [*base, "--dump-dom", index.as_uri()], capture_output=True, text=True, timeout=120
    ).stdout
    rows = [line for line in tree.splitlines() if 'class="tree"' in line]
    assert ["night-a" in rows[0], "↳" in rows[1], "on night-a" in rows[1]] == [True] * 3
    shutil.copy(tmp_path / "index.png", Path("/tmp/baker-nightly-index.png"))

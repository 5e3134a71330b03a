"""Same recipe, same lock, same variables: the same image, bit for bit, in another work
directory, a minute later, from a cold or a warm package cache, with the mirror unreachable."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from bakerun import BAKER, ROOT, Baked, sha256

pytestmark = pytest.mark.e2e

# No network for the second build: apt and urllib go through a proxy nobody listens on.
OFFLINE = {"http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9",
           "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9"}  # fmt: skip


def baker(*args: str | Path, cache: Path, work: Path, env: dict[str, str] | None = None,
          check: bool = True) -> subprocess.CompletedProcess[str]:  # fmt: skip
    full_env = {**os.environ, "BAKER_CACHE_DIR": str(cache), "BAKER_WORK_DIR": str(work),
                **(env or {})}  # fmt: skip
    proc = subprocess.run([str(BAKER), *map(str, args)], cwd=ROOT, env=full_env,
                          capture_output=True, text=True, check=False, timeout=1800)  # fmt: skip
    if check:
        assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, work_root: Path) -> dict[str, Path]:
    """A copy of the web recipe and what it references, so its lock lands beside it."""
    root = tmp_path_factory.mktemp("project")
    shutil.copytree(ROOT / "provisioners", root / "provisioners")
    (root / "images").mkdir()
    shutil.copytree(ROOT / "images" / "testinfra", root / "images" / "testinfra")
    recipe = root / "images" / "debian-12-web.yaml"
    # One measured boot is enough here; the other tests measure three.
    recipe.write_text((ROOT / "images" / "debian-12-web.yaml").read_text() + "boot_runs: 1\n")
    dirs = {"root": root, "recipe": recipe}
    for name in ("cache_a", "cache_b", "out_a", "out_b"):
        dirs[name] = root / name
    for name in ("work_a", "work_b"):
        dirs[name] = work_root / f"repro-{name}"
        dirs[name].mkdir(mode=0o711)
    return dirs


@pytest.fixture(scope="module")
def two_builds(project: dict[str, Path]) -> tuple[Baked, Baked]:
    p = project
    locked = baker("lock", p["recipe"], cache=p["cache_a"], work=p["work_a"])
    assert "packages, resolved" in locked.stdout
    lock_text = p["recipe"].with_suffix(".lock").read_text()
    assert "nginx" in lock_text and "deb.debian.org" not in lock_text

    started = time.monotonic()
    first = baker("build", p["recipe"], "--out", p["out_a"], cache=p["cache_a"],
                  work=p["work_a"])  # fmt: skip
    # The second build: another work directory, a fresh step cache holding only the
    # package files (warm packages, cold everything else), no network, a minute later.
    shutil.copytree(p["cache_a"] / "debs", p["cache_b"] / "debs")
    time.sleep(max(0.0, 60 - (time.monotonic() - started)))
    second = baker("build", p["recipe"], "--out", p["out_b"], cache=p["cache_b"],
                   work=p["work_b"], env=OFFLINE)  # fmt: skip
    assert "mmdebstrap" in second.stderr  # the base really was built again
    name = "debian-12-web"
    return (
        Baked(p["out_a"] / name, first.stdout.split()[-1], first.stdout, first.stderr),
        Baked(p["out_b"] / name, second.stdout.split()[-1], second.stdout, second.stderr),
    )


def test_same_recipe_and_lock_give_the_same_image(two_builds: tuple[Baked, Baked]) -> None:
    a, b = two_builds
    assert a.digest == b.digest
    assert sha256(a.artifact / "image.qcow2") == sha256(b.artifact / "image.qcow2")
    for sbom in ("sbom.cdx.json", "sbom.spdx.json"):
        assert (a.artifact / sbom).read_bytes() == (b.artifact / sbom).read_bytes()
    subjects = [json.loads((x.artifact / "provenance.json").read_text())["subject"]
                for x in (a, b)]  # fmt: skip
    assert subjects[0] == subjects[1]
    record = json.loads((a.artifact / "build.json").read_text())
    assert record["pins"]["lock"]["digest"].startswith("sha256:")
    assert record["source_date_epoch"] > 0


def test_a_stale_lock_is_refused(project: dict[str, Path], two_builds: object) -> None:
    p = project
    stale = p["root"] / "images" / "stale.yaml"
    stale.write_text(p["recipe"].read_text().replace("packages: [nginx]",
                                                     "packages: [nginx, curl]"))  # fmt: skip
    shutil.copy(p["recipe"].with_suffix(".lock"), stale.with_suffix(".lock"))
    proc = baker("build", stale, "--out", p["root"] / "out_stale", cache=p["cache_b"],
                 work=p["work_b"], check=False)  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        f"baker: error: {stale.with_suffix('.lock')}: the recipe's packages no longer match "
        "the lock (added curl); run `baker lock --update`."
    )
    assert not (p["root"] / "out_stale").exists()


def test_rebuild_check_passes_then_names_the_changed_file(
    project: dict[str, Path], two_builds: tuple[Baked, Baked]
) -> None:
    p = project
    a, _ = two_builds
    ok = baker("rebuild", "--check", a.artifact, cache=p["cache_b"], work=p["work_b"],
               env=OFFLINE)  # fmt: skip
    assert ok.stdout.strip() == f"reproduced {a.digest}"

    page = p["root"] / "provisioners" / "files" / "index.html"
    old_pin = sha256(page)
    page.write_text(page.read_text().replace("baked by baker", "baked again by baker"))
    p["recipe"].write_text(p["recipe"].read_text().replace(old_pin, sha256(page)))
    changed = baker("rebuild", "--check", a.artifact, cache=p["cache_b"], work=p["work_b"],
                    env=OFFLINE, check=False)  # fmt: skip
    assert changed.returncode == 1, changed.stderr[-3000:]
    assert changed.stdout.startswith(f"NOT reproduced: {a.artifact} has {a.digest}")
    assert "/var/www/html/index.html" in changed.stdout
    assert list(p["work_b"].iterdir()) == []


def test_diff_of_base_and_web(base_image: Baked, web_image: Baked) -> None:
    proc = subprocess.run([str(BAKER), "diff", str(base_image.artifact), str(web_image.artifact),
                           "--json"], capture_output=True, text=True, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    d = json.loads(proc.stdout)
    added = {p["name"] for p in d["packages"] if p["old"] is None}
    assert {"nginx", "nginx-common"} <= added
    new_files = {f["path"] for f in d["files"] if f["kind"] == "added"}
    assert "/etc/nginx/nginx.conf" in new_files
    assert "/var/www/html/index.html" in new_files
    text = subprocess.run([str(BAKER), "diff", str(base_image.artifact),
                           str(web_image.artifact)], capture_output=True, text=True,
                          check=True).stdout  # fmt: skip
    assert "nginx" in text

"""Same recipe, same lock, same variables: the same image, bit for bit, and the same SBOMs,
rebuilt in another work directory more than a minute later, from a fresh step cache holding
only the package files carried across the air gap, with the mirror unreachable (conftest's
`airgap`); a stale lock refused. (A changed file named by `rebuild --check` is shown on the
smallest rebuild, the layered child's: tests/e2e/test_e2e_layers.py.)"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from support.bakerun import BAKER, ROOT, AirGap, Baked, baker, sha256

pytestmark = pytest.mark.e2e


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


def test_a_stale_lock_is_refused(project: dict[str, Path], airgap: AirGap) -> None:
    p = project
    stale = p["root"] / "images" / "stale.yaml"
    stale.write_text(p["recipe"].read_text().replace("packages: [nginx]",
                                                     "packages: [nginx, curl]"))  # fmt: skip
    shutil.copy(p["recipe"].with_suffix(".lock"), stale.with_suffix(".lock"))
    proc = baker("build", stale, "--out", p["root"] / "out_stale", cache=airgap.cache,
                 work=p["work_b"], check=False)  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        f"baker: error: {stale.with_suffix('.lock')}: the recipe's packages no longer match "
        "the lock (added curl); run `baker lock --update`."
    )
    assert not (p["root"] / "out_stale").exists()


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


def test_a_locked_build_installs_what_the_unlocked_one_does(
    base_image: Baked, two_builds: tuple[Baked, Baked], project: dict[str, Path],
    session_cache: Path, work_root: Path, tmp_path: Path
) -> None:  # fmt: skip
    """The lock pins what the recipe installs; it must not change it (apt and all): the base
    recipe's lock names what its unlocked build installed, and the locked web build
    installed what its own lock names."""
    locked, _ = two_builds
    root = tmp_path / "team"  # a project of its own, so the lock lands beside its copy
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    shutil.copytree(ROOT / "images" / "testinfra", root / "images" / "testinfra")
    recipe = root / "images" / "debian-12-base.yaml"
    shutil.copy(ROOT / "images" / "debian-12-base.yaml", recipe)
    work = work_root / "lock-base"
    work.mkdir(mode=0o711)
    baker("lock", recipe, cache=session_cache, work=work)

    def sbom_names(artifact: Path) -> set[str]:
        doc = json.loads((artifact / "sbom.cdx.json").read_text())
        return {c["name"] for c in doc["components"]}

    def lock_names(lock: Path) -> set[str]:
        return {p["name"] for p in yaml.safe_load(lock.read_text())["packages"]}

    unlocked = sbom_names(base_image.artifact)
    base_lock = lock_names(recipe.with_suffix(".lock"))
    assert unlocked == base_lock, (sorted(base_lock - unlocked), sorted(unlocked - base_lock))
    installed = sbom_names(locked.artifact)
    web_lock = lock_names(project["recipe"].with_suffix(".lock"))
    assert {"apt", "gpgv", "debian-archive-keyring", "nginx"} <= installed
    assert installed == web_lock, (sorted(web_lock - installed), sorted(installed - web_lock))

"""The step cache with real builds: an unchanged recipe reuses its image and measurement and
boots nothing; `--jobs 2` builds two recipes side by side in one cache, each entry sound
(two processes storing one key at once are tests/test_cache.py's)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from support.bakerun import BAKER, ROOT, Baked, run_baker

from baker.cache import Cache

pytestmark = pytest.mark.e2e


def test_an_unchanged_recipe_reuses_its_image(
    base_image: Baked, work_root: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    proc = run_baker("build", "images/debian-12-base.yaml", "--out", out, work=work_root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split()[-1] == base_image.digest
    assert "SSH answered" not in proc.stderr  # no machine was started
    record = json.loads((out / "debian-12-base" / "build.json").read_text())
    status = {name: step["status"] for name, step in record["steps"].items()}
    assert status == {
        "base": "skipped", "disk": "skipped", "boot": "skipped", "provision": "skipped",
        "verify": "skipped", "shutdown": "skipped", "capture": "skipped",
        "leak-check": "skipped", "image": "reused", "measure": "reused",
    }  # fmt: skip
    # The same evidence as the build that made the image: the same SBOM bytes, and a record
    # that still names the base it came from.
    for name in ("sbom.cdx.json", "sbom.spdx.json", "boot.json", "verify.junit.xml"):
        assert (out / "debian-12-base" / name).read_bytes() == (
            base_image.artifact / name
        ).read_bytes(), name
    first = json.loads((base_image.artifact / "build.json").read_text())
    assert record["pins"]["base_digest"] == first["pins"]["base_digest"]
    check = subprocess.run([str(BAKER), "verify", str(out / "debian-12-base")],
                           capture_output=True, text=True, check=False)  # fmt: skip
    assert check.returncode == 0, check.stdout


def twice_recipe(where: Path) -> Path:
    """debian-12-base under its own name (so its image is its own), BIOS only and without
    cloud-init (the base and disk come from the session cache: the nightly's, the farm's and
    the layers' base), measured once."""
    recipe = where / "e2e-twice.yaml"
    (where / "testinfra").mkdir(exist_ok=True)
    shutil.copy(ROOT / "images/testinfra/test_base.py", where / "testinfra")
    recipe.write_text(
        (ROOT / "images" / "debian-12-base.yaml").read_text()
        .replace("name: debian-12-base", "name: e2e-twice")
        .replace("base:\n", "base:\n  boot: bios\n  cloud_init: false\n", 1)
        # Two machines measured at once share two cores: the budget is not what is tested.
        .replace("boot_budget_s: {kvm: 15, tcg: 120}\n", "") + "boot_runs: 1\n"
    )  # fmt: skip
    return recipe


def test_jobs_builds_two_recipes_at_once_sharing_one_cache(
    base_image: Baked, session_cache: Path, work_root: Path, tmp_path: Path
) -> None:
    """`baker build A B --jobs 2`: the session's base (every step from the cache) beside a
    recipe of its own built for real, at once, in one step cache (bench/jobs.py times real
    ones side by side): every line marked with its recipe, one NAME DIGEST line each, each
    cache entry sound, nothing half-made and nothing left."""
    twice = twice_recipe(tmp_path)
    work = work_root / f"jobs-{tmp_path.name}"
    work.mkdir(mode=0o711)
    work.chmod(0o711)
    out = tmp_path / "out"
    proc = run_baker("build", ROOT / "images/debian-12-base.yaml", twice, "--jobs", "2",
                     "--out", out, work=work)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stderr.splitlines()
    started = [i for i, line in enumerate(lines) if line.endswith("] started")]
    finished = [i for i, line in enumerate(lines) if "] done in " in line]
    assert len(started) == 2 and len(finished) == 2 and max(started) < min(finished)
    assert all(line.startswith(("[debian-12-base] ", "[e2e-twice] ")) for line in lines)
    results = dict(line.split() for line in proc.stdout.splitlines())
    assert results["debian-12-base"] == base_image.digest
    assert sorted(results) == ["debian-12-base", "e2e-twice"]
    for name, digest in results.items():
        record = json.loads((out / name / "build.json").read_text())
        assert record["image"]["digest"] == digest
    steps = json.loads((out / "e2e-twice" / "build.json").read_text())["steps"]
    cache = Cache(session_cache)
    mine = [e for e in cache.entries() if e.key in {s["key"] for s in steps.values() if "key" in s}]
    assert {"base", "disk", "image", "measure"} <= {e.step for e in mine}
    for e in mine:  # each sound: a lookup checks every file against its recorded hash
        entry = cache.lookup(e.step, e.key, pytest.fail)
        assert entry is not None
        entry.release()
    # No half-made entry or staging directory for any of its keys (another test worker's
    # builds' may come and go).
    keys = {s["key"] for s in steps.values() if "key" in s}
    assert not [p for p in cache.steps_dir.rglob(".*.tmp") if p.name.split(".")[1] in keys]
    assert list(work.iterdir()) == []

"""The step cache with real builds: an unchanged recipe reuses its image and measurement and
boots nothing; two builds of one recipe at once both succeed with one digest and leave one
sound entry per key; `--jobs 2` runs two recipes side by side."""

from __future__ import annotations

import json
import os
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
    """debian-12-base under its own name (so its image is its own), BIOS only (the base and
    disk come from the session cache: the nightly's, the farm's and the layers' base), measured
    once."""
    recipe = where / "e2e-twice.yaml"
    (where / "testinfra").mkdir(exist_ok=True)
    shutil.copy(ROOT / "images/testinfra/test_base.py", where / "testinfra")
    recipe.write_text(
        (ROOT / "images" / "debian-12-base.yaml").read_text()
        .replace("name: debian-12-base", "name: e2e-twice")
        .replace("base:\n", "base:\n  boot: bios\n", 1)
        # Two machines measured at once share two cores: the budget is not what is tested.
        .replace("boot_budget_s: {kvm: 15, tcg: 120}\n", "") + "boot_runs: 1\n"
    )  # fmt: skip
    return recipe


# Two machines of its own at once, beside whatever the other test worker runs: slower, and
# that is all (no budget is checked); alone, the other worker would sit idle meanwhile.
def test_two_builds_at_once_share_one_cache(
    base_image: Baked, session_cache: Path, work_root: Path, tmp_path: Path
) -> None:
    recipe = twice_recipe(tmp_path)
    env = {**os.environ, "BAKER_WORK_DIR": str(work_root)}
    procs = [
        subprocess.Popen(
            [str(BAKER), "build", str(recipe), "--out", str(tmp_path / f"out{i}")],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in (1, 2)
    ]
    results = [p.communicate(timeout=1800) for p in procs]
    for p, (_, stderr) in zip(procs, results, strict=True):
        assert p.returncode == 0, stderr[-3000:]
    digests = {stdout.split()[-1] for stdout, _ in results}
    assert len(digests) == 1
    keys = [json.loads((tmp_path / f"out{i}" / "e2e-twice" / "build.json").read_text())["steps"]
            for i in (1, 2)]  # fmt: skip
    assert keys[0]["image"]["key"] == keys[1]["image"]["key"]
    cache = Cache(session_cache)
    mine = [
        e for e in cache.entries() if e.key in {s["key"] for s in keys[0].values() if "key" in s}
    ]
    assert sorted(e.step for e in mine) == sorted({"base", "disk", "image", "measure"})
    for e in mine:  # each sound: a lookup checks every file against its recorded hash
        entry = cache.lookup(e.step, e.key, pytest.fail)
        assert entry is not None
        entry.release()
    # No half-made entry or staging directory of theirs is left behind (those of a build in
    # another test worker may come and go).
    pids = {str(p.pid) for p in procs}
    assert not [p for p in cache.steps_dir.rglob(".*.tmp") if p.name.split(".")[-3] in pids]


def test_jobs_runs_several_recipes_side_by_side(
    base_image: Baked, work_root: Path, tmp_path: Path
) -> None:
    """`baker build A B --jobs 2` on the two recipes this session has built already (two
    real builds at once are the test above; bench/jobs.py times real ones): both run at
    once, every line marked with its recipe, one NAME DIGEST line each, nothing left."""
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
    assert list(work.iterdir()) == []

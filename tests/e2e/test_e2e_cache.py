"""The step cache with real builds: an unchanged recipe reuses its image and measurement and
boots nothing; `--jobs 2` builds two recipes at once from one cache and leaves nothing
behind (several stores of one key at once: tests/test_cache.py)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from bakerun import BAKER, ROOT, Baked, run_baker

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
        "verify": "skipped", "shutdown": "skipped", "capture": "skipped", "image": "reused",
        "measure": "reused",
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


def test_two_recipes_built_at_once_with_jobs(
    base_image: Baked, session_cache: Path, work_root: Path, tmp_path: Path
) -> None:
    """`baker build A B --jobs 2`: two builds at once on one host, one cache (the base and
    disk come from it, shared), no port, domain or work dir in common, nothing left."""
    (tmp_path / "testinfra").mkdir()
    shutil.copy(ROOT / "images/testinfra/test_base.py", tmp_path / "testinfra")
    names = ["e2e-job-a", "e2e-job-b"]
    for name in names:
        (tmp_path / f"{name}.yaml").write_text(
            (ROOT / "images" / "debian-12-base.yaml").read_text()
            .replace("name: debian-12-base", f"name: {name}")
            # Two machines measured at once share two cores: the budget is not what is tested.
            .replace("boot_budget_s: {kvm: 15, tcg: 60}\n", "") + "boot_runs: 1\n"
        )  # fmt: skip
    before = {p.name for p in work_root.iterdir()}
    out = tmp_path / "out"
    proc = subprocess.run(
        [str(BAKER), "build", *(str(tmp_path / f"{n}.yaml") for n in names), "--jobs", "2",
         "--out", str(out)],
        cwd=ROOT, env={**os.environ, "BAKER_WORK_DIR": str(work_root)},
        capture_output=True, text=True, timeout=1800, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stderr.splitlines()
    # Both started before either finished: they ran side by side, each line marked.
    started = [i for i, line in enumerate(lines) if line.endswith("] started")]
    finished = [i for i, line in enumerate(lines) if "] done in " in line]
    assert len(started) == 2 and len(finished) == 2 and max(started) < min(finished)
    for name in names:
        assert any(line.startswith(f"[{name}]") and "SSH answered" in line for line in lines)
    # Each its own forwarded port ("SSH answered after N s on PORT").
    ports = {
        line.split("]")[0]: line.split()[-1]
        for line in lines
        if "SSH answered" in line and " on " in line
    }
    assert len(ports) == 2 and len(set(ports.values())) == 2, ports
    results = dict(line.split() for line in proc.stdout.splitlines())
    assert sorted(results) == names
    assert all(d.startswith("sha256:") for d in results.values())
    for name in names:
        record = json.loads((out / name / "build.json").read_text())
        assert record["image"]["digest"] == results[name]
        assert record["steps"]["disk"]["status"] in ("skipped", "reused")
        check = subprocess.run([str(BAKER), "verify", str(out / name)],
                               capture_output=True, text=True, check=False)  # fmt: skip
        assert check.returncode == 0, check.stdout
    assert {p.name for p in work_root.iterdir()} == before
    cache = Cache(session_cache)
    assert not [p for p in cache.steps_dir.rglob(".*.tmp")]

"""Recipes of one night built on each other (`base.image: recipe:FILE`), without VMs: the
night builds parents first, wave by wave, each child on its parent as it stands in OUT
(--parents); a child whose parent failed is not built and says why; a cycle is refused
before anything starts; the report lists each image under its parent. The real nights of a
base and a child are tests/e2e/test_e2e_nightly.py."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from support.artifacts import image_fixture, keypair_fixture, make_artifact

from baker import recipe
from baker.build import parallel
from baker.build.options import Options
from baker.errors import InputError
from baker.hashing import sha256_file
from baker.nightly import mirror, report, run
from baker.nightly.history import History

__all__ = ["image_fixture", "keypair_fixture"]  # the fixtures, for pytest to find

CHILD = """\
name: {name}
base:
  image: recipe:{parent}.yaml
  trust: keys/platform.pub
"""


@pytest.fixture
def made(image: Path, keypair: tuple[Path, Path]) -> Callable[[Path], Path]:
    """What a good build leaves: a real small artifact, signed."""
    return lambda directory: make_artifact(directory, image, keypair[0])


@pytest.fixture
def project(tmp_path: Path) -> Path:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "org.yaml").write_text("name: org\n")
    (tmp_path / "app.yaml").write_text(CHILD.format(name="app", parent="org"))
    (tmp_path / "tool.yaml").write_text(CHILD.format(name="tool", parent="app"))
    (tmp_path / "solo.yaml").write_text("name: solo\n")
    return tmp_path


def _night(
    project: Path,
    names: list[str],
    monkeypatch: pytest.MonkeyPatch,
    fail: set[str],
    made: Callable[[Path], Path] = lambda d: d,
) -> tuple[list[list[str]], list[run.Night], History]:
    """One night over `names` with builds that fail for `fail` and leave what `made` makes
    otherwise: the batches of builds as they were started, and each recipe's outcome."""
    batches: list[list[str]] = []

    def builds(
        jobs: Sequence[parallel.Job], limit: int, say: Callable[[str], None]
    ) -> list[parallel.Job]:
        batches.append([" ".join(job.argv) for job in jobs])
        for job in jobs:
            if job.name in fail:
                say(f"[{job.name}] baker: error: {job.name} failed on purpose")
                job.code = 1
                continue
            out = next(a.removeprefix("--out=") for a in job.argv if a.startswith("--out="))
            artifact = made(Path(out) / job.name)
            job.code, job.digest = 0, f"sha256:{sha256_file(artifact / 'image.qcow2')}"
        return list(jobs)

    monkeypatch.setattr(parallel, "run_all", builds)
    monkeypatch.setattr(mirror, "compare", lambda *a: None)
    history = History(str(project / "history.db"))
    recipes = [project / f"{n}.yaml" for n in names]
    _, nights = run.run(recipes, project / "out", history, Options(), 2, lambda s: None)
    return batches, nights, history


def test_parents_are_built_first_and_children_find_them_in_out(
    project: Path, monkeypatch: pytest.MonkeyPatch, made: Callable[[Path], Path]
) -> None:
    batches, nights, history = _night(project, ["tool", "app", "solo", "org"], monkeypatch,
                                      set(), made)  # fmt: skip
    names = [[cmd.split()[4].rsplit("/", 1)[1] for cmd in batch] for batch in batches]
    assert names == [["solo.yaml", "org.yaml"], ["app.yaml"], ["tool.yaml"]]
    assert all(f"--parents={project / 'out'}" in cmd for batch in batches for cmd in batch)
    by_name = {n.name: n for n in nights}
    assert by_name["app"].parent is by_name["org"] and by_name["solo"].parent is None
    assert {n.name: n.status for n in nights} == dict.fromkeys(["solo", "org", "app", "tool"],
                                                               "built")  # fmt: skip
    history.close()


def test_a_child_whose_parent_failed_is_not_built_and_says_why(
    project: Path, monkeypatch: pytest.MonkeyPatch, made: Callable[[Path], Path]
) -> None:
    batches, nights, history = _night(project, ["org", "app", "tool", "solo"], monkeypatch,
                                      {"org"}, made)  # fmt: skip
    assert len(batches) == 1  # org and solo; app and tool never started
    by_name = {n.name: n for n in nights}
    assert by_name["app"].error == "not built: its parent org failed tonight"
    assert by_name["tool"].error == "not built: its parent app failed tonight"
    rows = {r["recipe"]: r for r in history.all()}
    assert rows["app"]["status"] == "failed" and rows["app"]["parent"] == "org"
    assert rows["tool"]["parent"] == "app" and rows["solo"]["parent"] is None
    history.close()


def test_a_cycle_is_refused_before_anything_starts(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (project / "org.yaml").write_text(CHILD.format(name="org", parent="tool"))
    with pytest.raises(InputError) as e:
        _night(project, ["org", "app", "tool", "solo"], monkeypatch, set())
    said = str(e.value)
    assert said.startswith("a dependency cycle among the recipes: ")
    assert said.count(" → ") == 3 and "\n" not in said
    assert not (project / "out").exists()


def test_a_recipe_cannot_name_itself_or_a_missing_recipe(tmp_path: Path) -> None:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    path = tmp_path / "app.yaml"
    path.write_text(CHILD.format(name="app", parent="app"))
    with pytest.raises(InputError, match=r"app\.yaml:3: base\.image: a recipe cannot be its own"):
        recipe.load(path)
    path.write_text(CHILD.format(name="app", parent="gone"))
    with pytest.raises(InputError, match=r"app\.yaml:3: base\.image: no such recipe 'gone.yaml'"):
        recipe.load(path)


def test_the_report_lists_each_image_under_its_parent(tmp_path: Path) -> None:
    history = History(str(tmp_path / "h.db"))
    night = "2026-12-06T00:00:00Z"
    for name, parent in (("tool", "app"), ("solo", None), ("app", "org"), ("org", None)):
        history.record({"night": night, "recipe": name, "status": "built", "parent": parent,
                        "digest": "sha256:" + "a" * 64})  # fmt: skip
    index = report.write(history, night, tmp_path / "site").read_text()
    rows = [line for line in index.splitlines() if 'class="tree"' in line]
    assert [r.split('href="')[1].split(".html")[0] for r in rows] == ["org", "app", "tool", "solo"]
    assert "↳ " in rows[1] and "on org" in rows[1] and "on app" in rows[2]
    assert "app built for the first time on org" in index
    history.close()

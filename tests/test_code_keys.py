"""Step keys follow the code that decides each step's output, not all of baker: an edit to
the CLI, the registry client or the nightly keeps every key (a user upgrading baker keeps
their cached bases), an edit to the capture code changes the keys from the capture on."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from baker import hashing, recipe
from baker.build.pipeline import step_keys

ROOT = Path(__file__).resolve().parents[1]
RECIPE = """\
name: keyed
base:
  suite: bookworm
provisioners:
  - name: hello
    inline: echo hello
"""


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of baker's code that the test edits; step keys are computed from it."""
    copy = tmp_path / "code"
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(ROOT / "baker", copy / "baker", ignore=ignore)
    shutil.copytree(ROOT / "templates", copy / "templates", ignore=ignore)
    monkeypatch.setattr(hashing, "CODE_ROOT", copy)
    return copy


def _edit(path: Path) -> None:
    path.write_text(path.read_text() + "\n# an edit\n")
    hashing._code_digest.cache_clear()  # a process reads its code once; this one edits it


def test_an_unrelated_edit_keeps_every_key_and_a_related_one_changes_the_later_ones(
    tree: Path, tmp_path: Path
) -> None:
    path = tmp_path / "keyed.yaml"
    path.write_text(RECIPE)
    spec = recipe.load(path)
    before = step_keys(spec)
    assert list(before) == ["base", "disk", "boot", "provision", "verify", "shutdown",
                            "capture", "leak-check", "image"]  # fmt: skip

    for unrelated in ("cli/shared.py", "registry/client.py", "nightly/run.py", "progress.py",
                      "recipe/render.py"):  # fmt: skip
        _edit(tree / "baker" / unrelated)
    assert step_keys(spec) == before

    _edit(tree / "baker" / "image" / "generalize.py")
    after = step_keys(spec)
    same = [s for s in before if before[s] == after[s]]
    assert same == ["base", "disk", "boot", "provision", "verify", "shutdown"]

    _edit(tree / "baker" / "guest" / "customize.sh")
    assert step_keys(spec)["base"] != before["base"]


def test_a_step_key_follows_imports_into_the_modules_a_step_uses(tree: Path) -> None:
    closure = {
        p.relative_to(tree).as_posix()
        for p in hashing.module_closure("baker.build.steps.image", tree)
    }
    assert {"baker/build/steps/image.py", "baker/image/disk.py", "baker/image/bios.py"} <= closure
    # The runner and the progress display decide nothing of an image.
    assert not {"baker/build/runner.py", "baker/progress.py", "baker/cli/shared.py"} & closure

"""The command line as a user runs it: exit codes, one-line errors, nothing made on bad input."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from baker.edge.ssh import free_port

REPO = Path(__file__).resolve().parents[1]
BAKER = Path(sys.executable).parent / "baker"

# A recipe that validates, but whose build could get nowhere even if a bad option slipped
# through: its mirror is a closed local port and its libvirt is libvirt's mock driver.
HARMLESS = """\
name: harmless
variables:
  motd: hi
base:
  mirror: http://127.0.0.1:9/debian
backend:
  uri: test:///default
provisioners:
  - inline: echo {{ motd }}
"""


def _baker(*args: str | Path, cwd: Path = REPO, env: dict[str, str] | None = None):
    exe = str(BAKER) if BAKER.exists() else shutil.which("baker")
    assert exe, "the baker console script is not installed"
    return subprocess.run(
        [exe, *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "40", **(env or {})},
        timeout=120,  # a guard against a hang, not a performance check
        check=False,
    )


def _one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("baker: error: ")
    return lines[0].removeprefix("baker: error: ")


def test_validate_good_recipe() -> None:
    proc = _baker("validate", "images/debian-12-web.yaml", "--var", "admin_user=ops")
    assert proc.returncode == 0, proc.stderr
    assert (
        proc.stdout
        == "images/debian-12-web.yaml: ok (debian-12-web, 8 provisioners, 2 test files)\n"
    )
    assert proc.stderr == ""


def test_validate_bad_recipe(tmp_path: Path) -> None:
    # A long path and a narrow terminal: the message must still be one line.
    deep = tmp_path / ("a-rather-long-directory-name-" * 4) / "recipe.yaml"
    deep.parent.mkdir()
    deep.write_text("name: demo\nbase:\n  pakages: [nginx]\n")
    proc = _baker("validate", deep)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert (
        _one_error_line(proc) == f"{deep}:3: base.pakages: unknown field (did you mean packages?)."
    )


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--var", "motd"], "--var 'motd': expected KEY=VALUE with KEY a plain name."),
        (
            ["--var", "colour=red"],
            "{recipe}: --var colour: the recipe declares no such variable (it declares: motd).",
        ),
    ],
    ids=["not-key-value", "undeclared"],
)
def test_validate_bad_var(tmp_path: Path, args: list[str], expected: str) -> None:
    recipe = tmp_path / "harmless.yaml"
    recipe.write_text(HARMLESS)
    proc = _baker("validate", recipe, *args)
    assert proc.returncode == 2
    assert _one_error_line(proc) == expected.format(recipe=recipe)


def test_validate_missing_recipe(tmp_path: Path) -> None:
    proc = _baker("validate", tmp_path / "nope.yaml")
    assert proc.returncode == 2
    assert _one_error_line(proc) == (
        f"{tmp_path / 'nope.yaml'}: cannot read the recipe: No such file or directory."
    )


def _nothing_made(tmp_path: Path) -> dict[str, str]:
    return {
        "BAKER_WORK_DIR": str(tmp_path / "work"),
        "BAKER_CACHE_DIR": str(tmp_path / "cache"),
    }


def test_build_bad_recipe_exits_2_and_makes_nothing(tmp_path: Path) -> None:
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("name: Bad Name\n")
    out = tmp_path / "out"
    proc = _baker("build", recipe, "--out", out, env=_nothing_made(tmp_path))
    assert proc.returncode == 2
    assert _one_error_line(proc).startswith(f"{recipe}:1: name: expected at most 63 lower-case")
    assert proc.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]


def test_build_bogus_accel_exits_2_and_makes_nothing(tmp_path: Path) -> None:
    recipe = tmp_path / "harmless.yaml"
    recipe.write_text(HARMLESS)
    out = tmp_path / "out"
    proc = _baker("build", recipe, "--accel", "bogus", "--out", out, env=_nothing_made(tmp_path))
    assert proc.returncode == 2
    assert _one_error_line(proc) == (
        "--accel bogus: expected auto, kvm or tcg; see `baker build --help`."
    )
    assert proc.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["harmless.yaml"]


def test_version() -> None:
    from baker import __version__

    proc = _baker("version")
    assert proc.returncode == 0
    assert proc.stdout == f"{__version__}\n"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["build"], "missing argument 'RECIPE'; see `baker build --help`."),
        (["build", "x.yaml", "--on-eror", "keep"],
         "no such option: --on-eror (Possible options: --on-error); see `baker build --help`."),
        (["bild"],
         "no such command 'bild' (did you mean 'build', 'rebuild'?); see `baker --help`."),
        (["cache", "prune", "--max-size"],
         "option '--max-size' requires an argument; see `baker cache prune --help`."),
    ],
    ids=["missing-argument", "misspelt-option", "misspelt-command", "option-without-value"],
)  # fmt: skip
def test_usage_errors_are_one_line(args: list[str], expected: str) -> None:
    proc = _baker(*args)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert _one_error_line(proc) == expected


def test_an_out_that_is_a_file_is_refused_before_anything_starts(tmp_path: Path) -> None:
    recipe = tmp_path / "harmless.yaml"
    recipe.write_text(HARMLESS)
    taken = tmp_path / "taken"
    taken.write_text("a file\n")
    proc = _baker("build", recipe, "--out", taken, env=_nothing_made(tmp_path))
    assert proc.returncode == 2
    assert _one_error_line(proc) == f"--out {taken}: {taken} is not a directory."
    assert sorted(p.name for p in tmp_path.iterdir()) == ["harmless.yaml", "taken"]


def test_a_keep_that_is_a_file_is_refused_before_anything_starts(tmp_path: Path) -> None:
    taken = tmp_path / "taken"
    taken.write_text("a file\n")
    proc = _baker("rebuild", "--check", tmp_path / "out" / "x", "--keep", taken,
                  env=_nothing_made(tmp_path))  # fmt: skip
    assert proc.returncode == 2
    assert _one_error_line(proc) == f"--keep {taken}: {taken} is not a directory."
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


def test_on_error_takes_three_words(tmp_path: Path) -> None:
    recipe = tmp_path / "harmless.yaml"
    recipe.write_text(HARMLESS)
    proc = _baker("build", recipe, "--on-error", "shrug", env=_nothing_made(tmp_path))
    assert proc.returncode == 2
    assert _one_error_line(proc) == (
        "--on-error shrug: expected abort, keep or ask; see `baker build --help`."
    )


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--jobs", "0"], "--jobs 0: expected 1 or more builds at once."),
        (["--on-error", "ask"],
         "--on-error ask takes one recipe: several builds share no terminal."),
    ],
    ids=["no-jobs", "ask-with-several"],
)  # fmt: skip
def test_several_recipes_bad_options(tmp_path: Path, extra: list[str], expected: str) -> None:
    for name in ("a", "b"):
        (tmp_path / f"{name}.yaml").write_text(HARMLESS.replace("name: harmless", f"name: {name}"))
    proc = _baker("build", tmp_path / "a.yaml", tmp_path / "b.yaml", *extra,
                  env=_nothing_made(tmp_path))  # fmt: skip
    assert proc.returncode == 2
    assert _one_error_line(proc) == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.yaml", "b.yaml"]


def test_two_recipes_that_make_one_image_are_refused(tmp_path: Path) -> None:
    (tmp_path / "one").mkdir()
    for path in (tmp_path / "harmless.yaml", tmp_path / "one" / "harmless.yaml"):
        path.write_text(HARMLESS)
    a, b = tmp_path / "harmless.yaml", tmp_path / "one" / "harmless.yaml"
    proc = _baker("build", a, b, "--jobs", "2", env=_nothing_made(tmp_path))
    assert proc.returncode == 2
    assert _one_error_line(proc) == (
        f"{a} and {b} both make the image 'harmless'; give one another name."
    )


def test_farm_status_of_a_broker_that_is_not_there_says_so_in_one_line() -> None:
    port = free_port()
    proc = _baker("farm", "status", "--broker", f"redis://127.0.0.1:{port}/0")
    assert proc.returncode == 1
    assert _one_error_line(proc) == (
        f"--broker redis://127.0.0.1:{port}/0: the broker does not answer: "
        f"Error 111 connecting to 127.0.0.1:{port}. Connection refused."
    )

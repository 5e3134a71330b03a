"""The night's bookkeeping without VMs: a bad recipe fails itself and not the night, a build
that fails is recorded with the worker's own error line, the JUnit file has a case each,
and the command exits 1 with the failed names."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from xml.etree import ElementTree

import pytest

from baker.build import parallel
from baker.build.options import Options
from baker.nightly import mirror, run
from baker.nightly.history import History


def _recipes(tmp_path: Path) -> list[Path]:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    good = tmp_path / "good.yaml"
    good.write_text("name: good\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nboot_runs: 0\n")
    return [good, bad]


def test_a_bad_recipe_and_a_failed_build_are_each_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[list[str]] = []

    def failing_builds(
        jobs: Sequence[parallel.Job], limit: int, say: Callable[[str], None]
    ) -> list[parallel.Job]:
        for job in jobs:
            started.append(job.argv)
            say(f"[{job.name}] baker: error: the provisioner step failed (exit 3)")
            job.code, job.seconds = 1, 2.0
        return list(jobs)

    monkeypatch.setattr(parallel, "run_all", failing_builds)
    monkeypatch.setattr(mirror, "compare", lambda *a: None)
    history = History(str(tmp_path / "h.db"))
    night, nights = run.run(_recipes(tmp_path), tmp_path / "out", history, Options(), 1,
                            lambda s: None)  # fmt: skip
    by_name = {n.name: n for n in nights}
    assert [argv[4] for argv in started] == [str(tmp_path / "good.yaml")]  # bad never built
    assert by_name["good"].error == "the provisioner step failed (exit 3)"
    assert "boot_runs" in (by_name["bad"].error or "")
    assert [r["status"] for r in history.all()] == ["failed", "failed"]
    run.junit(night, nights, tmp_path / "night.xml")
    suite = ElementTree.parse(tmp_path / "night.xml").getroot()
    assert suite.get("tests") == "2" and suite.get("failures") == "2"
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".nightly-")]
    history.close()


def test_the_command_exits_1_naming_the_failed_recipes(tmp_path: Path) -> None:
    recipes = _recipes(tmp_path)[1:]  # only the bad one: no build starts
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "baker",
            "nightly",
            *map(str, recipes),
            "--out",
            str(tmp_path / "o"),
            "--history",
            str(tmp_path / "h.db"),
            "--junit",
            str(tmp_path / "j.xml"),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1
    assert proc.stdout.startswith("bad failed: ")
    assert proc.stderr.strip().splitlines()[-1] == (
        "baker: error: 1 of 1 recipes failed tonight: bad."
    )
    assert (tmp_path / "j.xml").is_file()


def test_a_failure_with_a_consoles_escape_sequences_still_gives_well_formed_junit(
    tmp_path: Path,
) -> None:
    """A measured boot that fails quotes the console's last lines, escape sequences and all."""
    night = run.Night(tmp_path / "a.yaml", "a", None, error="SSH did not answer: \x1b[H\x1b[J ok")
    run.junit("n1", [night], tmp_path / "night.xml")
    (failure,) = ElementTree.parse(tmp_path / "night.xml").getroot().iter("failure")
    assert failure.get("message") == "SSH did not answer: [H[J ok"

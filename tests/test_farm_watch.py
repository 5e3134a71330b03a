"""What a submitter is told while it waits, and what a worker reports of its build: the
durations --timeout takes, a job's state in words, a line each time a job's worker or step
changes, the timeout's one line with what is left; a build's progress lines read as they
stream; an interrupted build handed back rather than failed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from celery.exceptions import Reject  # type: ignore[import-untyped]

from baker import recipe
from baker.errors import BuildError, InputError
from baker.farm import payload, status, tasks, watch


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90), ("90s", 90), ("10m", 600), ("1h30m", 5400), ("0.5s", 0.5)]
)
def test_durations(text: str, seconds: float) -> None:
    assert watch.duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "10 minutes", "1d", "-5s"])
def test_a_duration_that_is_not_one_is_said_in_one_line(text: str) -> None:
    with pytest.raises(InputError, match=f"^--timeout {text}: expected a duration such as"):
        watch.duration(text)


class Result:
    """A Celery result whose state moves along a script, one step a poll."""

    def __init__(self, script: list[tuple[str, Any]]) -> None:
        self.script, self.polls = script, 0

    @property
    def state(self) -> str:
        self.polls += 1
        return self.script[min(self.polls - 1, len(self.script) - 1)][0]

    @property
    def info(self) -> Any:
        return self.script[min(self.polls - 1, len(self.script) - 1)][1]


def test_the_wait_says_each_change_of_worker_and_step_once() -> None:
    w1 = {"worker": "celery@w1", "step": "boot"}
    job = watch.Job("web", Result([("PENDING", None), ("PENDING", None),
                                   ("STARTED", {"hostname": "celery@w1"}), ("PROGRESS", w1),
                                   ("PROGRESS", w1), ("PROGRESS", w1 | {"step": "provision"}),
                                   ("SUCCESS", {"digest": "sha256:ab"})]))  # fmt: skip
    said: list[str] = []
    done: list[str] = []
    watch.wait([job], 60, lambda j: done.append(j.name), said.append, sleep=lambda s: None)
    assert said == [
        "web: waiting in the queue",
        "web: started on celery@w1",
        "web: on celery@w1, at boot",
        "web: on celery@w1, at provision",
    ]
    assert done == ["web"]


def test_the_timeout_ends_the_wait_with_each_jobs_state() -> None:
    at_tests = {"worker": "celery@w2", "step": "tests"}
    jobs = [watch.Job("web", Result([("PENDING", None)])),
            watch.Job("db", Result([("PROGRESS", at_tests)]))]  # fmt: skip
    with pytest.raises(BuildError) as e:
        watch.wait(jobs, 0, lambda j: None, lambda line: None, sleep=lambda s: None)
    assert str(e.value) == (
        "--timeout: no result after 0 s: web waiting in the queue; db on celery@w2, at tests."
    )


def test_a_builds_lines_are_read_as_they_come_and_its_steps_reported() -> None:
    script = (
        "import sys\n"
        "print('sha256:ab')\n"
        "for step in ('base', 'boot'):\n"
        "    print(f'baker: ==> {step}: doing it', file=sys.stderr, flush=True)\n"
        "print('[web] baker: ==> provision: 1/2', file=sys.stderr)\n"
        "print('mmdebstrap | I: ==> not a step', file=sys.stderr)\n"
    )
    steps: list[str] = []
    proc = tasks.run_build(
        [sys.executable, "-c", script], lambda line: tasks._step(line, steps.append)
    )
    assert proc.returncode == 0 and proc.stdout == "sha256:ab\n"
    assert steps == ["base", "boot", "provision"] and proc.stderr.count("\n") == 4


def test_an_interrupted_build_is_handed_back_not_failed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("BAKER_WORK_DIR", str(tmp_path))
    (tmp_path / "src").mkdir()
    subprocess.run(["git", "init", "-q", str(tmp_path / "src")], check=True)
    (tmp_path / "src" / "images").mkdir()
    (tmp_path / "src" / "images" / "farm.yaml").write_text("name: farm\n")
    job = payload.make(recipe.load(tmp_path / "src" / "images" / "farm.yaml"), {})

    def interrupted(argv: list[str], on_line: Any = None) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(
            argv, 130, "", "baker: error: interrupted; cleaned up.\n"
        )

    monkeypatch.setattr(tasks, "run_build", interrupted)
    with pytest.raises(Reject) as e:
        tasks.build.run(job)
    assert e.value.requeue is True


def test_the_status_reads_as_lines() -> None:
    farm = status.Farm(
        [status.Worker("celery@w1", ["baker.libvirt.amd64.any"],
                       [status.Running("id1", "web", "provision")]),
         status.Worker("celery@w2", ["baker.ec2"])],
        [status.Job("id2", "db", "baker.libvirt.amd64.kvm", "queued")],
        [status.Job("id0", "base", state="built", outcome="sha256:ab",
                    when="2026-12-07T10:00:00.123")],
    )  # fmt: skip
    assert status.render(farm) == [
        "workers: 2",
        "  celery@w1: baker.libvirt.amd64.any",
        "    running web (id1), at provision",
        "  celery@w2: baker.ec2",
        "    idle",
        "queued: 1",
        "  db (id2) on baker.libvirt.amd64.kvm",
        "recently finished: 1",
        "  2026-12-07T10:00:00 base built: sha256:ab",
    ]
    assert farm.as_dict()["workers"][0]["running"][0]["step"] == "provision"

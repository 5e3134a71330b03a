"""A farm on one machine: Debian's redis-server on 127.0.0.1 and two `baker worker`
processes. A job no worker listens for is said at once, and its wait ends at --timeout or
Ctrl-C in one line. `baker submit --wait` of two shipped recipes (Debian 12 and 13) gives the
digests of the session's local builds (a worker builds from the job's content alone). Then a
worker is killed with SIGKILL mid-build (`baker farm status` shows it building the job): the
job comes back to the other worker, the broker restarts mid-build there and that worker is
stopped with SIGTERM, and the build still finishes and reaches the submitter; once the killed
worker starts again its leftovers (domain, work directories) are gone."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from support.bakerun import BAKER, ROOT, Baked, domains
from support.farm import Redis, Worker

pytestmark = pytest.mark.e2e

# How soon a dead worker's job comes back (the default is hours). It must stay above a
# build's length, or a job still being built is handed out again: above the ~70 s this
# test's build takes to boot (when the kill comes) and the ~60 s its redelivered build takes.
VISIBILITY_S = 100


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory):
    server = Redis(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def broker(redis_server: Redis) -> str:
    return redis_server.url


@pytest.fixture(scope="module")
def farm(
    broker: str, redis_server: Redis, tmp_path_factory: pytest.TempPathFactory, work_root: Path
):
    root = tmp_path_factory.mktemp("farm")
    artifacts, work = root / "artifacts", work_root / "farm"
    artifacts.mkdir()
    work.mkdir(mode=0o711)
    visible = {"BAKER_FARM_VISIBILITY_S": str(VISIBILITY_S)}
    workers = {
        n: Worker(n, broker, artifacts, work, root / f"{n}.log", visible) for n in ("w1", "w2")
    }
    yield {"broker": broker, "artifacts": artifacts, "work": work, "workers": workers,
           "root": root, "redis": redis_server}  # fmt: skip
    for w in workers.values():
        w.stop()


def test_a_job_no_worker_listens_for_is_said_at_once_and_its_wait_ends_cleanly(
    farm, tmp_path: Path
) -> None:
    """A recipe that asks for KVM, on a farm of TCG hosts: submit says so before it waits;
    --timeout ends the wait with exit 1 and the job's state; Ctrl-C ends it in one line."""
    project = tmp_path / "project"
    (project / "images").mkdir(parents=True)
    (project / ".git").mkdir()
    recipe = project / "images" / "farm-kvm.yaml"
    recipe.write_text("name: farm-kvm\nbackend:\n  accel: kvm\n")
    argv = [str(BAKER), "submit", str(recipe), "--broker", farm["broker"], "--wait"]
    notice = "baker: no worker listens on queue baker.libvirt.amd64.kvm; the job waits in the queue"
    started = time.monotonic()
    timed = subprocess.Popen([*argv, "--timeout", "10s"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)  # fmt: skip
    assert timed.stderr is not None
    assert timed.stderr.readline().strip() == notice
    assert time.monotonic() - started < 5
    _, rest = timed.communicate(timeout=60)
    assert timed.returncode == 1
    assert rest.strip().splitlines()[-1] == (
        "baker: error: --timeout: no result after 10 s: farm-kvm waiting in the queue."
    )
    # Ctrl-C once the second job is in the broker's queue (the first one waits there too).
    queue = redis.Redis.from_url(farm["broker"])
    queued = queue.llen("baker.libvirt.amd64.kvm")
    waiting = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert waiting.stderr is not None
    assert waiting.stderr.readline().strip() == notice
    deadline = time.monotonic() + 30
    while queue.llen("baker.libvirt.amd64.kvm") == queued:
        assert time.monotonic() < deadline and waiting.poll() is None
        time.sleep(0.1)
    waiting.send_signal(signal.SIGINT)
    _, rest = waiting.communicate(timeout=60)
    assert waiting.returncode == 130
    assert rest.strip().splitlines()[-1] == (
        "baker: error: interrupted; farm-kvm still queued or building on the farm "
        "(`baker farm status` shows where)."
    )
    assert "Traceback" not in rest and "Exception ignored" not in rest, rest
    assert queue.llen("baker.libvirt.amd64.kvm") == queued + 1  # it goes on without its submitter
    queue.close()


def test_submit_wait_gives_the_local_builds_digests(
    farm, base_image: Baked, trixie_image: Baked
) -> None:
    """Two submitters at once, each with the options of the session's own build of its
    recipe (the Debian 13 image was measured with --boot-runs 1): every step comes from the
    session's step cache, and the digests are the local ones."""
    env = {**os.environ, "BAKER_WORK_DIR": str(farm["work"])}

    def submit(recipe: str, *options: str) -> subprocess.Popen[str]:
        argv = [str(BAKER), "submit", recipe, "--broker", farm["broker"], "--wait", *options]
        return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)  # fmt: skip

    submits = [
        submit("images/debian-12-base.yaml"),
        submit("images/debian-13-base.yaml", "--boot-runs", "1"),
    ]
    lines: dict[str, str] = {}
    for proc in submits:
        stdout, stderr = proc.communicate(timeout=1800)
        assert proc.returncode == 0, stderr[-3000:]
        lines.update(dict(line.split(" ", 1) for line in stdout.strip().splitlines()))
    assert lines == {"debian-12-base": base_image.digest, "debian-13-base": trixie_image.digest}
    for name, digest in lines.items():
        stored = farm["artifacts"] / name / digest.split(":")[1]
        assert (stored / "image.qcow2").is_file()


RECIPE = """\
name: farm-fault
base:
  boot: bios
  cloud_init: false
boot_runs: 1
provisioners:
  - file: ../files/fault.txt
    sha256: {sha256}
    dest: /etc/fault.txt
"""


def test_a_worker_killed_mid_build_loses_nothing_and_leaves_nothing(farm, tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / "images").mkdir(parents=True)
    (project / "files").mkdir()
    (project / ".git").mkdir()
    text = f"killed mid-build {time.time_ns()}\n"  # a build no cache holds
    (project / "files" / "fault.txt").write_text(text)
    recipe = project / "images" / "farm-fault.yaml"
    recipe.write_text(RECIPE.format(sha256=hashlib.sha256(text.encode()).hexdigest()))
    before = domains()
    submit = subprocess.Popen(
        [str(BAKER), "submit", str(recipe), "--broker", farm["broker"], "--wait"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "BAKER_WORK_DIR": str(farm["work"])},
    )
    # The worker that took the job: the session its `baker build` runs in, once the build
    # machine is up (mid-build: a domain, an overlay and a forwarded port to leave behind).
    workers = farm["workers"]
    deadline, victim = time.monotonic() + 300, None
    while victim is None:
        assert time.monotonic() < deadline, "no worker started the build"
        # Its own domain: the other test worker's builds make domains of theirs meanwhile.
        if any("farm-fault" in d for d in domains() - before):
            victim = next(
                (w for w in workers.values() if w.proc.pid in _sessions("farm-fault.yaml")), None
            )
        time.sleep(0.5)
    # The farm as an operator sees it: both workers, and the one job, on the victim.
    shown = _status(farm)
    assert sorted(w["name"] for w in shown["workers"]) == ["celery@w1", "celery@w2"]
    running = [(w["name"], r["name"]) for w in shown["workers"] for r in w["running"]]
    assert running == [(f"celery@{victim.name}", "farm-fault")]
    victim.kill()
    survivor = next(w for w in workers.values() if w is not victim)
    # The job comes back, to the survivor; once its build is under way there, the broker
    # restarts (its appendonly file keeps the queues) and the survivor is asked to stop
    # (SIGTERM, a warm shutdown): the build finishes, and its result reaches the submitter.
    deadline = time.monotonic() + 400
    while not _running_on(farm, survivor.name, "farm-fault"):
        assert time.monotonic() < deadline and submit.poll() is None, "the job did not come back"
        time.sleep(2)
    farm["redis"].stop()
    farm["redis"].start()
    survivor.proc.send_signal(signal.SIGTERM)
    out, err = submit.communicate(timeout=900)
    assert submit.returncode == 0, err[-3000:]
    name, digest = out.strip().splitlines()[-1].split(" ", 1)
    assert name == "farm-fault" and digest.startswith("sha256:")
    assert f"built by celery@{survivor.name}," in err
    assert f"baker: farm-fault: on celery@{survivor.name}, at " in err  # where it was, as it went
    assert survivor.proc.wait(300) == 0
    said = survivor.output()
    assert said.count("Warm shutdown") == 1 and "Traceback" not in said, said[-3000:]
    done = [line for line in survivor.output().splitlines() if "'name': 'farm-fault'" in line]
    assert len(done) == 1, done  # built once on the survivor: not handed out twice
    # Nothing of farm-fault may still run there.
    deadline, quiet_since = time.monotonic() + 60, time.monotonic()
    while time.monotonic() - quiet_since < 5:
        assert time.monotonic() < deadline, "farm-fault builds kept running"
        if _sessions("farm-fault.yaml") - {victim.proc.pid}:
            quiet_since = time.monotonic()
        time.sleep(0.5)
    # The killed worker comes back and removes what its killed build left: its work directory,
    # and its domain unless the other test worker's `baker clean` (which ends every domain
    # whose build is gone, on the whole host) got there first.
    left = {d for d in domains() - before if "farm-fault" in d}
    again = Worker(victim.name, farm["broker"], farm["artifacts"], farm["work"], victim.log,
                   {"BAKER_FARM_VISIBILITY_S": str(VISIBILITY_S)})  # fmt: skip
    workers[victim.name] = again
    removed = {line.split()[3].rstrip(":") for line in again.output().splitlines()
               if line.startswith("baker: removed domain ")}  # fmt: skip
    assert left <= removed, (left, again.output()[-2000:])
    assert {d for d in domains() - before if "farm-fault" in d} == set()
    leftover = [p for p in farm["work"].iterdir() if p.name.startswith("baker-")]
    assert leftover == [], leftover
    assert _sessions("farm-fault.yaml") == set()  # no build process of it still running


def _status(farm: dict[str, Any]) -> dict[str, Any]:
    shown = subprocess.run([str(BAKER), "farm", "status", "--broker", farm["broker"], "--json"],
                           capture_output=True, text=True, check=False)  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    return dict(json.loads(shown.stdout))


def _running_on(farm: dict[str, Any], worker: str, name: str) -> bool:
    """Whether `worker` runs a job of `name` that has reached a build step of its own."""
    for w in _status(farm)["workers"]:
        if w["name"] == f"celery@{worker}":
            return any(r["name"] == name and r["step"] not in ("starting", "started")
                       for r in w["running"])  # fmt: skip
    return False


def _sessions(needle: str) -> set[int]:
    """The session ids of the processes whose command line holds `needle`."""
    found = set()
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if needle.encode() in cmdline.read_bytes():
                found.add(os.getsid(int(cmdline.parent.name)))
        except (OSError, ProcessLookupError):
            continue
    return found

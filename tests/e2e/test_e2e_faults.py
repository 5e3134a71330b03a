"""Faults a build meets, injected for real: the machine killed, signals at each long wait, a
full work or output disk, libvirtd gone before and during a build, the guest's sshd killed
(corrupted cache entries: test_e2e_resume.py). Each case checks the exit code, one clear last
line, and that nothing is left: no libvirt domain, no qemu, no forwarded port, no work dir,
no partial artifact. They reuse the session's cached base and disk (their recipes share that
base)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.bakerun import (
    BAKER,
    ROOT,
    Baked,
    assert_nothing_left,
    domains,
    qemu_processes,
    run_baker,
)
from support.mounts import tmpfs

pytestmark = pytest.mark.e2e

BASE = """\
base:
  suite: bookworm
  arch: amd64
  disk_size_mib: 2048
"""
SLEEPY = "provisioners:\n  - name: sleepy\n    inline: sleep {seconds}\n"


def write_recipe(directory: Path, name: str, body: str) -> Path:
    path = directory / f"{name}.yaml"
    path.write_text(f"name: {name}\n{BASE}{body}")
    return path


@pytest.fixture
def dirs(tmp_path: Path, work_root: Path) -> tuple[Path, Path]:
    work = work_root / f"fault-{tmp_path.name}"
    work.mkdir(mode=0o711)
    work.chmod(0o711)
    return tmp_path / "out", work


def last_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert "Traceback" not in stderr, stderr[-3000:]
    return lines[-1]


def build_until(
    recipe: Path, out: Path, work: Path, marker: str, act, env: dict[str, str] | None = None
) -> tuple[int, str]:
    """Start a build; when `marker` appears on its stderr, call act(proc); return its exit
    code and all it said on stderr."""
    proc = subprocess.Popen(
        [str(BAKER), "build", str(recipe), "--out", str(out)],
        cwd=ROOT, env={**os.environ, "BAKER_WORK_DIR": str(work), **(env or {})},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if marker in line:
            act(proc)
            break
    else:
        pytest.fail(f"the build ended before {marker!r}: {''.join(seen)[-3000:]}")
    _, rest = proc.communicate(timeout=600)
    return proc.returncode, "".join(seen) + rest


def domain_of(name: str) -> str:
    (found,) = [d for d in domains() if d.startswith(f"baker-{name}-")]
    return found


def test_the_machine_killed_during_a_provisioner(tmp_path: Path, dirs) -> None:
    out, work = dirs
    name = "fault-qemu-killed"
    recipe = write_recipe(tmp_path, name, SLEEPY.format(seconds=600))
    before = domains()

    def kill_qemu(_proc: subprocess.Popen[str]) -> None:
        pid = int(Path(f"/run/libvirt/qemu/{domain_of(name)}.pid").read_text())
        os.kill(pid, signal.SIGKILL)

    code, stderr = build_until(recipe, out, work, "provisioner 1/1: sleepy", kill_qemu)
    assert code == 1, stderr[-3000:]
    last = last_line(stderr)
    assert last.startswith("baker: error: the build machine stopped during the provision step")
    assert "its console ended with:" in last
    assert_nothing_left(out, work, name, before, stderr)


@pytest.mark.parametrize(
    ("sig", "marker", "delay"),
    [
        (signal.SIGINT, "==> boot:", 3.0),  # while a cold machine boots, before it is saved
        (signal.SIGTERM, "==> capture:", 0.5),
        (signal.SIGHUP, "==> measure:", 5.0),  # measuring: its first boot under way
    ],
    ids=["SIGINT-waiting-for-ssh", "SIGTERM-capture", "SIGHUP-measure"],
)
def test_a_signal_at_each_long_wait(
    tmp_path: Path, dirs, sig: signal.Signals, marker: str, delay: float, base_image: Baked,
    session_cache: Path,
) -> None:  # fmt: skip
    out, work = dirs
    name = f"fault-{sig.name.lower()}"
    recipe = write_recipe(tmp_path, name, "boot_runs: 1\n")
    before = domains()
    cache = session_cache
    if marker == "==> boot:":
        # The session's base and disk, but no saved machine: the build machine boots cold.
        # The later signals land after the boot: the session's saved machine is resumed.
        cache = tmp_path / "cache"
        keys = json.loads((base_image.artifact / "build.json").read_text())["steps"]
        for step in ("base", "disk"):
            entry = Path("steps", step, keys[step]["key"])
            shutil.copytree(session_cache / entry, cache / entry, copy_function=os.link)
        cache.chmod(0o755)

    def send(proc: subprocess.Popen[str]) -> None:
        time.sleep(delay)
        proc.send_signal(sig)

    code, stderr = build_until(recipe, out, work, marker, send, {"BAKER_CACHE_DIR": str(cache)})
    assert code == 130
    assert last_line(stderr) == "baker: error: interrupted; cleaned up."
    assert_nothing_left(out, work, name, before, stderr)


def test_a_full_work_disk_is_named_with_what_the_build_needs(tmp_path: Path) -> None:
    name = "fault-work-full"
    recipe = write_recipe(tmp_path, name, "")
    before = domains()
    with tmpfs("48m") as small:
        proc = run_baker("build", recipe, "--out", tmp_path / "out", work=small)
        left = list(small.iterdir())
    assert proc.returncode == 1
    last = last_line(proc.stderr)
    disk = rf"baker: error: step [\w-]+: the disk at {re.escape(str(small))} (is|was) full \("
    assert re.match(disk, last), last
    needs = "needs about 4.00 GiB there for the work directory (BAKER_WORK_DIR picks another"
    assert needs in last
    assert left == []
    assert not (tmp_path / "out").exists()
    assert {d for d in domains() - before if name in d} == set()


def test_a_full_output_disk_leaves_nothing_partial(base_image: Baked, dirs) -> None:
    _, work = dirs
    with tmpfs("32m") as small:
        # The session's cached base image: only the publish step has work to do.
        proc = run_baker("build", "images/debian-12-base.yaml", "--out", small, work=work)
        left = list(small.iterdir())
    assert proc.returncode == 1
    last = last_line(proc.stderr)
    disk = rf"baker: error: step publish: the disk at {re.escape(str(small))} (is|was) full \("
    assert re.match(disk, last), last
    assert "the artifact needs " in last and "(--out picks another place); No space left" in last
    assert left == []  # no partial artifact, no staging directory
    assert list(work.iterdir()) == []
    assert qemu_processes(work) == []


@contextlib.contextmanager
def libvirtd_stopped() -> Iterator[None]:
    subprocess.run(["pkill", "-x", "libvirtd"], check=False)
    for _ in range(100):
        if subprocess.run(["pgrep", "-x", "libvirtd"], capture_output=True).returncode != 0:
            break
        time.sleep(0.1)
    try:
        yield
    finally:
        restart_libvirtd()


def restart_libvirtd() -> None:
    if subprocess.run(["pgrep", "-x", "libvirtd"], capture_output=True).returncode != 0:
        subprocess.run(["libvirtd", "-d"], check=True)
    for _ in range(100):
        if subprocess.run(["virsh", "-c", "qemu:///system", "version"],
                          capture_output=True).returncode == 0:  # fmt: skip
            return
        time.sleep(0.2)
    pytest.fail("libvirtd did not come back")


@pytest.mark.exclusive  # no other build may lose its libvirtd
def test_libvirtd_stopped_before_a_build(tmp_path: Path, dirs) -> None:
    out, work = dirs
    recipe = write_recipe(tmp_path, "fault-no-libvirtd", "")
    with libvirtd_stopped():
        proc = run_baker("build", recipe, "--out", out, work=work)
    assert proc.returncode == 1
    last = last_line(proc.stderr)
    assert last.startswith("baker: error: cannot connect to libvirtd at qemu:///system (")
    assert last.endswith("): is libvirtd running? (scripts/setup-host.sh starts it)")
    assert list(work.iterdir()) == [] and not out.exists()


@pytest.mark.exclusive
def test_libvirtd_stopped_during_a_build(tmp_path: Path, dirs) -> None:
    out, work = dirs
    name = "fault-libvirtd-gone"
    recipe = write_recipe(tmp_path, name, SLEEPY.format(seconds=15))
    before = domains()
    try:
        code, stderr = build_until(
            recipe,
            out,
            work,
            "provisioner 1/1: sleepy",
            lambda _p: subprocess.run(["pkill", "-x", "libvirtd"]),
        )
    finally:
        restart_libvirtd()
    assert code == 1
    last = last_line(stderr)
    assert last.startswith("baker: error: lost the connection to libvirtd (qemu:///system)")
    assert_nothing_left(out, work, name, before, stderr)


def test_sshd_killed_mid_provisioner_is_an_error_not_a_hang(tmp_path: Path, dirs) -> None:
    out, work = dirs
    name = "fault-sshd-killed"
    recipe = write_recipe(
        tmp_path, name,
        "provisioners:\n  - name: cut\n    timeout_s: 120\n    inline: |\n"
        "      pkill -KILL sshd\n      sleep 600\n",
    )  # fmt: skip
    before = domains()
    proc = run_baker("build", recipe, "--out", out, work=work)
    assert proc.returncode == 1
    last = last_line(proc.stderr)
    assert last.startswith("baker: error: the SSH connection to the build machine was lost")
    assert "(provisioner cut)" in last
    assert_nothing_left(out, work, name, before, proc.stderr)

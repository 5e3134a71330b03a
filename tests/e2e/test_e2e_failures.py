"""Builds that fail, or are interrupted, say why and leave nothing behind."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
from support.bakerun import BAKER, ROOT, Baked, assert_nothing_left, domains, run_baker

pytestmark = pytest.mark.e2e

# The same base as images/debian-12-base.yaml, so the cached base and disk are reused.
BASE = """\
base:
  suite: bookworm
  arch: amd64
  disk_size_mib: 2048
"""


def write_recipe(directory: Path, name: str, body: str) -> Path:
    path = directory / f"{name}.yaml"
    path.write_text(f"name: {name}\n{BASE}{body}")
    return path


@pytest.fixture
def dirs(tmp_path: Path, work_root: Path) -> tuple[Path, Path]:
    work = work_root / tmp_path.name
    work.mkdir(mode=0o711)
    work.chmod(0o711)
    return tmp_path / "out", work


def test_failing_provisioner_names_the_step_and_cleans_up(
    tmp_path: Path, dirs: tuple[Path, Path]
) -> None:
    out, work = dirs
    name = "e2e-fail-provision"
    recipe = write_recipe(
        tmp_path,
        name,
        "provisioners:\n"
        "  - name: fine\n    inline: echo all good\n"
        "  - name: fail-here\n    inline: |\n      echo about to fail\n      exit 3\n",
    )
    before = domains()
    proc = run_baker("build", recipe, "--out", out, work=work)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("baker: error: provisioner fail-here failed (exit 3)")
    assert "about to fail" in last
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""
    assert_nothing_left(out, work, name, before, proc.stderr)


def test_failing_testinfra_test_fails_the_build_and_cleans_up(
    tmp_path: Path, dirs: tuple[Path, Path]
) -> None:
    out, work = dirs
    name = "e2e-fail-test"
    test_file = tmp_path / "test_wrong.py"
    test_file.write_text(
        "def test_hostname_is_not_what_it_is(host):\n"
        '    assert host.file("/etc/hostname").contains("no-such-host")\n\n'
        "def test_sshd_runs(host):\n"
        '    assert host.service("ssh").is_running\n'
    )
    digest = hashlib.sha256(test_file.read_bytes()).hexdigest()
    recipe = write_recipe(
        tmp_path, name, f"tests:\n  - path: test_wrong.py\n    sha256: {digest}\n"
    )
    before = domains()
    proc = run_baker("build", recipe, "--out", out, work=work)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last == (
        "baker: error: 1 of 2 testinfra tests failed: test_wrong::test_hostname_is_not_what_it_is."
    )
    assert "Traceback" not in proc.stderr.split("testinfra |")[0]
    assert_nothing_left(out, work, name, before, proc.stderr)


def test_boot_over_budget_fails_the_build_and_publishes_nothing(
    base_image: Baked, vuln_db: Path, tmp_path: Path, dirs: tuple[Path, Path]
) -> None:
    """The shipped base recipe with a budget of 1 s: every step is the session's own build's,
    its measurement too (reused measurements are held to today's budget), so the gate alone
    fails the build, and nothing is published."""
    out, work = dirs
    name = "debian-12-base"
    images = tmp_path / "images"
    shutil.copytree(ROOT / "images" / "testinfra", images / "testinfra")
    recipe = images / f"{name}.yaml"
    recipe.write_text((ROOT / "images" / f"{name}.yaml").read_text().replace(
        "boot_budget_s: {kvm: 15, tcg: 120}", "boot_budget_s: {kvm: 1, tcg: 1}"))  # fmt: skip
    before = domains()
    proc = run_baker("build", recipe, "--out", out, f"--vuln-db={vuln_db}", work=work)
    assert proc.returncode == 1
    # Nothing built or booted again: the image from the cache, its measurement with it.
    assert "reused image from the cache" in proc.stderr, proc.stderr[-3000:]
    assert "==> measure" not in proc.stderr and "==> boot" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(
        "baker: error: boot budget exceeded: the median time to SSH over 3 boots under uefi "
    ), last
    assert last.endswith("over the recipe's boot_budget_s of 1 s.")
    assert_nothing_left(out, work, name, before, proc.stderr)


@pytest.mark.parametrize(
    ("sig", "wait_for"),
    [(signal.SIGINT, "SSH answered"), (signal.SIGTERM, "provisioner 1/1: sleepy")],
)
def test_interrupted_build_cleans_up(
    tmp_path: Path, dirs: tuple[Path, Path], sig: signal.Signals, wait_for: str
) -> None:
    out, work = dirs
    name = f"e2e-interrupt-{sig.name.lower()}"
    recipe = write_recipe(
        tmp_path, name, "provisioners:\n  - name: sleepy\n    inline: sleep 600\n"
    )
    before = domains()
    proc = subprocess.Popen(
        [str(BAKER), "build", str(recipe), "--out", str(out)],
        cwd=ROOT,
        env={**os.environ, "BAKER_WORK_DIR": str(work)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if wait_for in line:
            proc.send_signal(sig)
            break
    else:
        pytest.fail(f"the build ended before {wait_for!r}: {''.join(seen)[-2000:]}")
    _, rest = proc.communicate(timeout=120)
    assert proc.returncode == 130, rest
    assert "interrupted" in rest.strip().splitlines()[-1]
    assert "Traceback" not in rest
    assert_nothing_left(out, work, name, before, "".join(seen) + rest)


# Alone: its `baker clean` removes every stale domain on the host, another test's too (the
# farm test's killed build, which that test expects its restarted worker to find).
@pytest.mark.exclusive
def test_on_error_keep_leaves_a_machine_to_log_in_to_until_clean(
    tmp_path: Path, dirs: tuple[Path, Path]
) -> None:
    import re
    import shlex

    from support.bakerun import forwarded_port, port_closed

    out, work = dirs
    name = "e2e-keep"
    recipe = write_recipe(
        tmp_path, name,
        "provisioners:\n  - name: breaks\n    inline: |\n      echo left for a look >/root/note\n"
        "      exit 4\n",
    )  # fmt: skip
    before = domains()
    proc = run_baker("build", recipe, "--out", out, "--on-error", "keep", work=work)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("baker: error: provisioner breaks failed (exit 4)")
    assert last.endswith("and end it with `baker clean`.")
    (command,) = re.findall(r"log in with `(ssh [^`]+)`", last)
    kept = {d for d in domains() - before if name in d}
    assert len(kept) == 1
    # The printed command logs in, with the host key checked against the kept known_hosts.
    login = subprocess.run([*shlex.split(command), "-o", "BatchMode=yes", "cat /root/note"],
                           capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert login.returncode == 0, login.stderr
    assert login.stdout.strip() == "left for a look"
    assert not out.exists()

    cleaned = subprocess.run([str(BAKER), "clean"], env={**os.environ, "BAKER_WORK_DIR": str(work)},
                             capture_output=True, text=True, check=False)  # fmt: skip
    assert cleaned.returncode == 0, cleaned.stderr
    assert f"removed domain {kept.pop()}: kept after a failure" in cleaned.stdout
    port = forwarded_port(proc.stderr)
    assert port is not None and port_closed(port)
    assert_nothing_left(out, work, name, before, proc.stderr)

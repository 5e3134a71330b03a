"""The saved build machine: builds from a base resume the machine saved from it instead of
booting it. Two builds resume one saved machine at once without colliding, each with the
host's clock and random state of its own; a corrupted saved machine (and a corrupted base
disk) is refused, and the build boots cold to the same image."""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
from pathlib import Path

import pytest
from support.bakerun import BAKER, ROOT, Baked, assert_nothing_left, baker, domains
from support.tamper import flip_byte

pytestmark = pytest.mark.e2e

# debian-12-base's base (so the session's saved machine is the one resumed), a provisioner
# that says what the resumed machine's clock and random generator give, and when apt's daily
# upgrade timer, started again, would fire, then fails: the rest of the build is not what is
# tested here.
PROBE = """\
name: {name}
base:
  suite: bookworm
  arch: amd64
  disk_size_mib: 2048
provisioners:
  - name: probe
    inline: |
      echo "clock $(date +%s.%N)"
      echo "random $(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n')"
      systemctl start apt-daily-upgrade.timer
      echo "timer $(systemctl is-enabled apt-daily-upgrade.timer)" \\
        "$(systemctl show -P NextElapseUSecRealtime apt-daily-upgrade.timer)"
      exit 3
"""


def _watch(proc: subprocess.Popen[str], seen: list[tuple[float, str]]) -> None:
    """Every stderr line of `proc`, with the host's clock when it arrived."""
    assert proc.stderr is not None
    for line in proc.stderr:
        seen.append((time.time(), line))


def test_two_builds_resume_one_saved_machine_at_once_each_with_its_own_clock_and_randomness(
    base_image: Baked, tmp_path: Path, work_root: Path
) -> None:
    before = domains()
    runs = []
    for n in (1, 2):
        name = f"e2e-resume-{n}"
        recipe = tmp_path / f"{name}.yaml"
        recipe.write_text(PROBE.format(name=name))
        work = work_root / name
        work.mkdir(mode=0o711)
        proc = subprocess.Popen(
            [str(BAKER), "build", str(recipe), "--out", str(tmp_path / "out")],
            cwd=ROOT, env={**os.environ, "BAKER_WORK_DIR": str(work)},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        seen: list[tuple[float, str]] = []
        watcher = threading.Thread(target=_watch, args=(proc, seen))
        watcher.start()
        runs.append((name, work, proc, watcher, seen))
    randoms = []
    for name, work, proc, watcher, seen in runs:
        proc.wait(timeout=600)
        watcher.join()
        stderr = "".join(line for _, line in seen)
        assert proc.returncode == 1, stderr[-3000:]
        assert "resumed the saved build machine" in stderr, stderr[-3000:]
        assert "provisioner probe failed (exit 3)" in stderr.splitlines()[-1]
        # The provisioner's own output lines (its failure message repeats the last of them).
        said = [(at, line) for at, line in seen if re.match(r"\s*probe [|│] ", line)]
        (clock,) = [
            (at, float(m[1])) for at, line in said if (m := re.search(r"clock ([\d.]+)", line))
        ]
        # The guest's clock, read as it ran, against the host's as its line arrived.
        assert abs(clock[0] - clock[1]) < 2, clock
        randoms += [m[1] for _, line in said if (m := re.search(r"random ([0-9a-f]{64})", line))]
        # The build machine's timers are held, the image's own setting left as it was.
        (timer,) = [line.split("timer ", 1)[1].strip() for _, line in said if " timer " in line]
        assert timer.startswith("enabled ") and "2100-01-01" in timer, timer
        assert_nothing_left(tmp_path / "out", work, name, before, stderr)
    # One saved machine, two machines: their generators do not give the same bytes.
    assert len(randoms) == 2 and randoms[0] != randoms[1]


def test_corrupted_cache_entries_are_refused_and_the_build_boots_cold_to_the_same_image(
    base_image: Baked, session_cache: Path, work_root: Path, tmp_path: Path
) -> None:
    """The image is made again from a machine, in a copy of the session's cache where the
    base disk has a flipped byte inside the root filesystem's data and the saved machine's
    memory another: both entries are refused and made again, and the image is the same.
    (One rebuild shows both: each is a whole build machine's worth under TCG.)"""
    cache = tmp_path / "cache"
    steps = json.loads((base_image.artifact / "build.json").read_text())["steps"]
    base_digest = json.loads((base_image.artifact / "build.json").read_text())["pins"][
        "base_digest"
    ]
    # The base build's own entries only (the session's cache holds every other build's by
    # now): its base, disk and measure, and the machine saved from its base; not its image.
    for step in ("base", "disk", "measure"):
        (cache / "steps" / step).mkdir(parents=True)
        subprocess.run(["cp", "-a", "--sparse=always", session_cache / "steps" / step /
                        steps[step]["key"], cache / "steps" / step], check=True)  # fmt: skip
    flip_byte(cache / "steps" / "disk" / steps["disk"]["key"] / "base.raw", 200 << 20)
    (saved,) = [
        entry
        for entry in (session_cache / "steps" / "boot").iterdir()
        if json.loads((entry / "entry.json").read_text())["meta"]["carried"]["base"]["digest"]
        == base_digest
    ]
    (cache / "steps" / "boot").mkdir()
    subprocess.run(["cp", "-a", "--sparse=always", saved, cache / "steps" / "boot"], check=True)
    saved = cache / "steps" / "boot" / saved.name
    state = saved / "state"
    flip_byte(state, state.stat().st_size // 2)
    proc = baker("build", "images/debian-12-base.yaml", "--out", tmp_path / "out", cache=cache,
                 work=work_root)  # fmt: skip
    assert f"cache entry disk/{steps['disk']['key'][:16]} is corrupt" in proc.stderr
    assert "base.raw does not match its recorded sha256): dropped; rebuilding it" in proc.stderr
    assert f"cache entry boot/{saved.name[:16]} is corrupt" in proc.stderr
    assert "state does not match its recorded sha256): dropped; rebuilding it" in proc.stderr
    assert "saved the booted machine" in proc.stderr  # booted cold, and saved again
    assert proc.stdout.split()[-1] == base_image.digest
    assert "reused measure" in proc.stderr  # the same image: measured once

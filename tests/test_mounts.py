"""A stop that lands while a tool runs leaves nothing behind: the child is killed and reaped
before the cleanup runs, and a loop mount that took effect is undone even when `mount` itself
was cut off (the SIGTERM-during-capture failure: a mount left under the work dir)."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from baker.edge import mounts, tools


def _children() -> list[int]:
    """This process's child processes, zombies included."""
    me = str(os.getpid())
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == me:
            found.append(int(stat.parent.name))
    return found


@pytest.fixture
def ext4(tmp_path: Path) -> Path:
    raw = tmp_path / "fs.raw"
    with raw.open("wb") as f:
        f.truncate(16 * 1024 * 1024)
    subprocess.run(["mkfs.ext4", "-q", "-F", raw], check=True)
    return raw


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="loop mounts need root")


def test_an_interrupted_tool_is_killed_and_reaped_before_the_error_goes_up(tmp_path: Path) -> None:
    before = set(_children())
    threading.Timer(0.3, lambda: os.kill(os.getpid(), 2)).start()
    with pytest.raises(KeyboardInterrupt):
        tools.run(["sh", "-c", "sleep 5"])
    assert set(_children()) - before == set()


@needs_root
def test_a_mount_that_took_effect_is_undone_when_the_caller_is_stopped(
    ext4: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_run = tools.run

    def stopped_after_mounting(argv: Sequence[str | Path], **kw: Any) -> str:
        out = real_run(argv, **kw)
        if Path(str(argv[0])).name == "mount":
            raise KeyboardInterrupt  # as if the signal came just as mount returned
        return out

    monkeypatch.setattr(tools, "run", stopped_after_mounting)
    mountpoint = tmp_path / "mnt"
    with pytest.raises(KeyboardInterrupt), mounts.read_only(ext4, mountpoint, 0):
        pass
    assert not mountpoint.exists()
    assert mounts.mounted_under(tmp_path) == []
    loops = subprocess.run(
        ["losetup", "--noheadings", "--associated", ext4], capture_output=True, text=True
    )
    assert loops.stdout.strip() == ""


@needs_root
def test_release_under_lazily_unmounts_what_a_cut_off_step_left(ext4: Path, tmp_path: Path) -> None:
    work = tmp_path / "work"
    (work / "deep" / "mnt").mkdir(parents=True)
    subprocess.run(["mount", "-o", "ro,loop", ext4, work / "deep" / "mnt"], check=True)
    assert mounts.mounted_under(work) == [work / "deep" / "mnt"]
    mounts.release_under(work)
    assert mounts.mounted_under(work) == []
    time.sleep(0.1)  # the loop device's autoclear follows the last reference
    (work / "deep" / "mnt").rmdir()


def test_mount_points_with_spaces_are_read_back(tmp_path: Path) -> None:
    assert mounts._unescape("/a\\040b\\134c") == "/a b\\c"
    assert mounts.mounted_under(tmp_path) == []

"""The step cache on its own: entries whole or not at all, checked before use, one per key
when two processes store at once, pruned by age and size but never while in use; and the
`baker cache` commands."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from baker.cache import Cache

BAKER = Path(sys.executable).parent / "baker"


def _store(cache: Cache, tmp: Path, step: str, key: str, data: bytes) -> Path:
    src = tmp / f"{step}-{key}-{os.getpid()}-{time.monotonic_ns()}"
    src.write_bytes(data)
    entry = cache.store(step, key, {"out": src}, {"n": len(data)})
    entry.release()
    return entry.path


def test_a_stored_entry_is_found_checked_and_held(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "c")
    path = _store(cache, tmp_path, "image", "k1", b"disk bytes")
    entry = cache.lookup("image", "k1", pytest.fail)
    assert entry is not None
    assert entry.file("out").read_bytes() == b"disk bytes"
    assert entry.meta == {"n": 10}
    assert entry.path == path
    entry.release()
    assert cache.lookup("image", "nope", pytest.fail) is None


@pytest.mark.parametrize(
    ("damage", "said"),
    [
        (lambda p: (p / "out").write_bytes(b"disk bytez"), "does not match its recorded sha256"),
        (lambda p: (p / "out").write_bytes(b"short"), "has 5 bytes, not 10"),
        (lambda p: (p / "out").unlink(), "out is missing"),
        (lambda p: (p / "entry.json").write_text("{"), "entry.json cannot be read"),
    ],
)
def test_a_damaged_entry_is_reported_and_dropped(tmp_path: Path, damage, said: str) -> None:
    cache = Cache(tmp_path / "c")
    path = _store(cache, tmp_path, "image", "k1", b"disk bytes")
    damage(path)
    reports: list[str] = []
    assert cache.lookup("image", "k1", reports.append) is None
    assert len(reports) == 1 and said in reports[0] and "dropped" in reports[0]
    assert not path.exists()


def _race(root: str, tmp: str, n: int) -> None:
    cache = Cache(Path(root))
    _store(cache, Path(tmp), "base", "same-key", b"the same output" * 1000)


def test_two_processes_storing_one_key_leave_one_sound_entry(tmp_path: Path) -> None:
    root = tmp_path / "c"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_race, args=(str(root), str(tmp_path), i)) for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    cache = Cache(root)
    (only,) = cache.entries()
    assert only.key == "same-key"
    entry = cache.lookup("base", "same-key", pytest.fail)
    assert entry is not None
    entry.release()
    assert [p.name for p in (root / "steps" / "base").iterdir()] == ["same-key"]


def test_prune_by_age_then_size_keeps_entries_in_use(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "c")
    for i, age_days in enumerate((40, 20, 10, 0)):
        path = _store(cache, tmp_path, "image", f"k{i}", os.urandom(64 * 1024))
        when = time.time() - age_days * 86400
        os.utime(path, (when, when))
    held = cache.lookup("image", "k0", pytest.fail)  # a build is using the oldest
    assert held is not None
    os.utime(held.path, (time.time() - 40 * 86400,) * 2)
    removed, busy = cache.prune(older_than_s=15 * 86400)
    assert [e.key for e in removed] == ["k1"] and [e.key for e in busy] == ["k0"]
    held.release()
    # Then by size: the least recently used go until the rest fit.
    one = next(e.size for e in cache.entries() if e.key == "k3")
    removed, busy = cache.prune(max_size=one)
    assert [e.key for e in removed] == ["k0", "k2"] and busy == []
    assert [e.key for e in cache.entries()] == ["k3"]


def test_the_cache_commands(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "c")
    _store(cache, tmp_path, "image", "a" * 64, b"x" * 5000)
    env = {**os.environ, "BAKER_CACHE_DIR": str(tmp_path / "c")}

    def baker(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(BAKER), "cache", *args], env=env, capture_output=True,
                              text=True, check=False)  # fmt: skip

    listed = baker("list")
    assert listed.returncode == 0, listed.stderr
    assert "image" in listed.stdout and "a" * 16 in listed.stdout
    assert "1 entries" in listed.stdout
    bad = baker("prune", "--max-size", "lots")
    assert bad.returncode == 2
    assert bad.stderr.strip() == (
        "baker: error: --max-size lots: expected a size like 500M or 10G."
    )
    assert baker("prune").returncode == 2
    pruned = baker("prune", "--max-size", "0")
    assert pruned.returncode == 0, pruned.stderr
    assert f"removed image/{'a' * 16}" in pruned.stdout
    assert cache.entries() == []

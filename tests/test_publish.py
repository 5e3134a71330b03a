"""baker.artifact.publish: the artifact directory appears whole, or not at all."""

from __future__ import annotations

import hashlib
import stat
import subprocess
from pathlib import Path

import pytest

from baker.artifact import publish, sha256sums


def _sources(directory: Path, files: dict[str, bytes]) -> dict[str, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, data in files.items():
        src = directory / f"work-{name}"
        src.write_bytes(data)
        src.chmod(0o600)
        out[name] = src
    return out


FIRST = {"image.qcow2": b"QFI\xfb first image", "build.json": b'{"n": 1}\n', "old.txt": b"old"}
SECOND = {"image.qcow2": b"QFI\xfb second image", "build.json": b'{"n": 2}\n'}


def _listing(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def test_publish_moves_files_and_writes_verifiable_sums(tmp_path: Path) -> None:
    out = tmp_path / "out"
    sources = _sources(tmp_path / "work", FIRST)
    final = publish(out, "demo", sources)

    assert final == out / "demo"
    assert sorted(p.name for p in out.iterdir()) == ["demo"]  # nothing hidden left behind
    assert sorted(p.name for p in final.iterdir()) == sorted([*FIRST, "SHA256SUMS"])
    for name, data in FIRST.items():
        assert (final / name).read_bytes() == data
        assert not sources[name].exists()  # moved, not copied
    assert (final / "SHA256SUMS").read_text() == "".join(
        f"{hashlib.sha256(FIRST[n]).hexdigest()}  {n}\n" for n in sorted(FIRST)
    )
    check = subprocess.run(
        ["sha256sum", "--strict", "-c", "SHA256SUMS"],
        cwd=final,
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert sorted(check.stdout.splitlines()) == sorted(f"{n}: OK" for n in FIRST)
    # Readable by everyone, whatever the work files' modes were.
    assert stat.S_IMODE(final.stat().st_mode) == 0o755
    assert {stat.S_IMODE(p.stat().st_mode) for p in final.iterdir()} == {0o644}


def test_sums_catch_a_changed_file(tmp_path: Path) -> None:
    final = publish(tmp_path / "out", "demo", _sources(tmp_path / "work", FIRST))
    (final / "build.json").write_bytes(b'{"n": 666}\n')
    check = subprocess.run(
        ["sha256sum", "-c", "SHA256SUMS"], cwd=final, capture_output=True, text=True, check=False
    )
    assert check.returncode == 1
    assert "build.json: FAILED" in check.stdout


def test_publish_replaces_an_existing_artifact(tmp_path: Path) -> None:
    out = tmp_path / "out"
    publish(out, "demo", _sources(tmp_path / "work1", FIRST))
    (out / "other").mkdir()  # a neighbour that must not be touched
    (out / "other" / "keep").write_text("keep")

    final = publish(out, "demo", _sources(tmp_path / "work2", SECOND))

    assert _listing(final) == {**SECOND, "SHA256SUMS": sha256sums(final).encode()}
    assert not (final / "old.txt").exists()
    assert sorted(p.name for p in out.iterdir()) == ["demo", "other"]
    assert (out / "other" / "keep").read_text() == "keep"


def test_failure_midway_leaves_the_previous_artifact_and_no_staging(tmp_path: Path) -> None:
    out = tmp_path / "out"
    publish(out, "demo", _sources(tmp_path / "work1", FIRST))
    before = _listing(out / "demo")

    sources = _sources(tmp_path / "work2", SECOND)
    sources["verify.junit.xml"] = tmp_path / "work2" / "never-written.xml"
    with pytest.raises(FileNotFoundError):
        publish(out, "demo", sources)

    assert sorted(p.name for p in out.iterdir()) == ["demo"]  # no .demo.*.partial
    assert _listing(out / "demo") == before


def test_failure_on_first_publish_leaves_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(FileNotFoundError):
        publish(out, "demo", {"image.qcow2": tmp_path / "missing.qcow2"})
    assert list(out.iterdir()) == []
    # Nor the directories it made for an --out that was not there.
    with pytest.raises(FileNotFoundError):
        publish(tmp_path / "new" / "out", "demo", {"image.qcow2": tmp_path / "missing.qcow2"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_sha256sums_lists_only_regular_files_but_itself(tmp_path: Path) -> None:
    (tmp_path / "b.txt").write_bytes(b"b")
    (tmp_path / "a.txt").write_bytes(b"a")
    (tmp_path / "SHA256SUMS").write_text("stale\n")
    (tmp_path / "subdir").mkdir()
    assert sha256sums(tmp_path) == (
        f"{hashlib.sha256(b'a').hexdigest()}  a.txt\n{hashlib.sha256(b'b').hexdigest()}  b.txt\n"
    )

"""A full disk, named: a real tool (tar, dd) and a real Python write filling a real 8 MiB
tmpfs, through the subprocess helper, the step runner and a whole build on the fake backend.
The message names the file system by its mount point, with what it had free, what the step
or the build needs there where known, and what failed in its own words; nothing partial is
left. Needs root (mount)."""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console
from support.mounts import tmpfs
from support.recipe_files import WriteRecipe

from baker import recipe
from baker.backends.base import BuildLabel
from baker.backends.fake import FakeBackend
from baker.build import runner
from baker.build.options import Options
from baker.build.pipeline import build
from baker.build.runner import Saved, Step
from baker.build.state import BuildState, Context
from baker.cache import Cache, Entry
from baker.edge import tools
from baker.errors import BuildError, DiskFull
from baker.hashing import content_key
from baker.progress import Reporter
from baker.recipe.spec import Recipe, Spec

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs: needs root")

MIB = 1 << 20


@pytest.fixture
def small(tmp_path: Path) -> Iterator[Path]:
    with tmpfs("8m", tmp_path / "small") as mount:
        yield mount


def full_at(mount: Path, step: str | None = None, total: str = "8.00 MiB") -> str:
    """The start of the sentence for a disk full at `mount`."""
    prefix = re.escape(f"step {step}: ") if step else ""
    free = r"\d+(\.\d+)? (B|KiB|MiB)"
    return f"^{prefix}the disk at {re.escape(str(mount))} is full \\({free} free of {total}\\); "


# the subprocess helper ----------------------------------------------------------------------


def test_tar_filling_the_disk_is_named_with_its_own_words(tmp_path: Path, small: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "data").write_bytes(os.urandom(12 * MIB))
    with pytest.raises(DiskFull) as caught:
        tools.run(["tar", "--create", f"--file={small}/x.tar", "-C", tmp_path, "src"])
    message = str(caught.value)
    assert re.match(full_at(small) + r"tar failed \(exit 2\): ", message)
    assert "Wrote only" in message or "No space left on device" in message
    assert caught.value.mount == small and caught.value.total == 8 * MIB
    assert caught.value.full


def test_dd_filling_the_disk_is_named_while_its_lines_stream(small: Path) -> None:
    lines: list[str] = []
    with pytest.raises(DiskFull) as caught:
        tools.run(["dd", "if=/dev/zero", f"of={small}/fill", "bs=1M", "count=16"],
                  on_line=lines.append)  # fmt: skip
    message = str(caught.value)
    assert re.match(full_at(small) + r"dd failed \(exit 1\): .*No space left on device", message)
    assert any("No space left on device" in line for line in lines)


def test_a_tool_failing_on_a_full_disk_is_named_though_it_says_nothing_of_space(
    tmp_path: Path, small: Path
) -> None:
    fill(small / "fill")
    argv: list[str | Path] = ["tar", "--create", f"--file={small}/x.tar", tmp_path / "missing"]
    with pytest.raises(DiskFull, match=full_at(small) + r"tar failed .*missing"):
        tools.run(argv)
    # The same failure with room to spare is the tool's alone.
    (small / "fill").unlink()
    with pytest.raises(BuildError) as caught:
        tools.run(argv)
    assert not isinstance(caught.value, DiskFull)
    assert str(caught.value).startswith("tar failed (exit 2): ")


def fill(path: Path) -> None:
    """Write zeros at `path` until the disk is full."""
    with pytest.raises(OSError, match="No space left on device"), path.open("wb") as f:
        while True:
            f.write(bytes(MIB))
            f.flush()


# the step runner ------------------------------------------------------------------------------


class Writes(Step):
    """A step that writes `size` bytes into the work directory, with Python or with dd, and
    registers the removal of what it wrote; `tidy` removes a partial output itself before
    the failure goes up (so the disk has room again by then)."""

    def __init__(
        self, name: str, size: int, tool: bool = False, tidy: bool = False, cached: bool = False
    ) -> None:
        self.name = name  # type: ignore[misc]
        self.cached = cached  # type: ignore[misc]
        self.size, self.tool, self.tidy = size, tool, tidy
        self.undone = False

    def describe(self, ctx: Context) -> str:
        return f"write {self.size} bytes"

    def key(self, ctx: Context, state: BuildState, previous: str | None) -> str:
        return content_key(self.name, {"size": self.size}, previous)

    def run(self, ctx: Context, state: BuildState, cleanup: contextlib.ExitStack) -> None:
        out = ctx.work / f"{self.name}.bin"
        cleanup.callback(self._undo, out)
        try:
            if self.tool:
                count = str(self.size // MIB)
                tools.run(["dd", "if=/dev/zero", f"of={out}", "bs=1M", f"count={count}"])
            else:
                with out.open("wb") as f:
                    for _ in range(self.size // MIB):
                        f.write(bytes(MIB))
        except BaseException:
            if self.tidy:
                out.unlink(missing_ok=True)
            raise

    def _undo(self, out: Path) -> None:
        out.unlink(missing_ok=True)
        self.undone = True

    def save(self, ctx: Context, state: BuildState) -> Saved:
        return Saved({"out": ctx.work / f"{self.name}.bin"})

    def load(
        self, ctx: Context, state: BuildState, entry: Entry, cleanup: contextlib.ExitStack
    ) -> None:
        pass


def context(work: Path, cache: Cache, out: Path) -> Context:
    work.mkdir(exist_ok=True)
    return Context(
        spec=Spec(Recipe(name="t"), work / "t.yaml", "0" * 64, "0" * 64),
        opts=Options(out=out, cache=cache),
        accel="tcg",
        backend=FakeBackend(hands_back="disk"),
        work=work,
        reporter=Reporter(Console(file=io.StringIO(), width=200)),
        locked=None,
        lock_file=work / "t.lock",
        source_date_epoch=0,
        sign_key=None,
        started=dt.datetime.now(dt.UTC),
    )


def new_state() -> BuildState:
    return BuildState(label=BuildLabel.new("t"))


@pytest.mark.parametrize("tool", [False, True], ids=["python", "dd"])
def test_a_step_filling_the_work_disk_names_it_and_what_the_build_needs(
    tmp_path: Path, small: Path, tool: bool
) -> None:
    ctx = context(small / "work", Cache(tmp_path / "cache"), tmp_path / "out")
    step = Writes("fill", 16 * MIB, tool=tool)
    with pytest.raises(DiskFull) as caught:
        runner.run([step], ctx, new_state())
    message = str(caught.value)
    need = (
        "a build of this recipe needs about 4.00 GiB there for the work directory "
        "(BAKER_WORK_DIR picks another place); "
    )
    said = (
        r"dd failed \(exit 1\): .*No space left on device"
        if tool
        else "No space left on device$"  # a write to an open file names none
    )
    assert re.match(full_at(small, "fill") + re.escape(need) + said, message)
    assert step.undone and list(ctx.work.iterdir()) == []


def test_a_disk_that_has_room_again_was_full(tmp_path: Path, small: Path) -> None:
    ctx = context(small / "work", Cache(tmp_path / "cache"), tmp_path / "out")
    with pytest.raises(DiskFull) as caught:
        runner.run([Writes("fill", 16 * MIB, tidy=True)], ctx, new_state())
    message = str(caught.value)
    free = r"\d+\.\d+ MiB"
    assert re.match(
        f"^step fill: the disk at {re.escape(str(small))} was full \\({free} free of 8.00 MiB "
        r"now\); a build of this recipe needs about 4\.00 GiB there",
        message,
    )
    assert not caught.value.full


def test_a_full_step_cache_says_how_much_the_output_needs(tmp_path: Path, small: Path) -> None:
    cache = Cache(small / "cache")
    ctx = context(tmp_path / "work", cache, tmp_path / "out")
    step = Writes("made", 12 * MIB, cached=True)
    with pytest.raises(DiskFull) as caught:
        runner.run([step], ctx, new_state())
    message = str(caught.value)
    # The cache removed what it staged before the runner looked: the disk "was" full.
    assert re.match(
        f"^step made: the disk at {re.escape(str(small))} was full "
        r"\(8\.00 MiB free of 8\.00 MiB now\); the made step's output needs 12\.00 MiB there "
        r"\(BAKER_CACHE_DIR picks another place\); No space left on device: .*/made\.bin -> ",
        message,
    )
    # Neither a staged nor a stored entry is left in the cache, and the step was undone.
    assert [p for p in cache.steps_dir.rglob("*") if p.is_file()] == []
    assert step.undone


class Fails(Step):
    """A step that fails with a guest's words about its own disk."""

    name = "provision"

    def describe(self, ctx: Context) -> str:
        return "fail"

    def run(self, ctx: Context, state: BuildState, cleanup: contextlib.ExitStack) -> None:
        raise BuildError("provisioner apt failed (exit 100): E: No space left on device")


def test_a_guest_out_of_space_on_a_host_with_room_is_the_guests_own(tmp_path: Path) -> None:
    ctx = context(tmp_path / "work", Cache(tmp_path / "cache"), tmp_path / "out")
    with pytest.raises(BuildError) as caught:
        runner.run([Fails()], ctx, new_state())
    assert not isinstance(caught.value, DiskFull)
    assert str(caught.value) == "provisioner apt failed (exit 100): E: No space left on device"


# a whole build ----------------------------------------------------------------------------

RECIPE = """\
name: small-work
base:
  boot: bios  # the fake's disk has no EFI binaries to put on an ESP
provisioners:
  - name: first
    inline: echo first
"""


def test_a_build_on_a_small_work_disk_fails_saying_the_disk_is_full(
    write_recipe: WriteRecipe, tmp_path: Path
) -> None:
    """The fake backend hands back a real 1 GiB disk made in the work directory (sfdisk,
    mkfs.ext4 of a tree, grub-mkimage, qemu-img): on a 1 MiB work disk one of them fails, after
    the machine ran and before anything is published."""
    fake = FakeBackend(hands_back="disk")
    spec = recipe.load(write_recipe(RECIPE))
    with tmpfs("1m", tmp_path / "tiny") as tiny:
        opts = Options(out=tmp_path / "out", cache=Cache(tmp_path / "cache"), work_root=tiny,
                       measure=False)  # fmt: skip
        with pytest.raises(DiskFull) as caught:
            build(spec, opts, Reporter(Console(file=io.StringIO())), backend=fake)
        left = list(tiny.iterdir())
    message = str(caught.value)
    assert re.match(full_at(tiny, "capture", "1.00 MiB"), message)
    assert "a build of this recipe needs about 4.00 GiB there for the work directory" in message
    assert "No space left on device" in message
    assert fake.journal[-1] == "destroy"
    assert left == []  # no work directory, no partial disk
    assert not (tmp_path / "out").exists()


def test_a_full_output_disk_says_how_much_the_artifact_needs(
    write_recipe: WriteRecipe, tmp_path: Path
) -> None:
    fake = FakeBackend(hands_back="disk")
    spec = recipe.load(write_recipe(RECIPE))
    work = tmp_path / "work"
    work.mkdir()
    with tmpfs("256k", tmp_path / "out") as out:
        opts = Options(out=out, cache=Cache(tmp_path / "cache"), work_root=work, measure=False)
        with pytest.raises(DiskFull) as caught:
            build(spec, opts, Reporter(Console(file=io.StringIO())), backend=fake)
        left = list(out.iterdir())
    message = str(caught.value)
    # The publish step removed its staging directory before the runner looked.
    assert re.match(
        f"^step publish: the disk at {re.escape(str(out))} was full "
        r"\(256\.00 KiB free of 256\.00 KiB now\); the artifact needs \d+\.\d+ KiB there "
        r"\(--out picks another place\); No space left on device: .*image\.qcow2 -> ",
        message,
    )
    assert left == [] and list(work.iterdir()) == []

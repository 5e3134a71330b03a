"""--on-error keep and ask through the fake backend, and what `baker clean` may remove: the
kept machine is left running with its work directory, a retry runs the failed provisioner
again on the same machine, and only things whose build is gone count as leftovers."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from support.recipe_files import WriteRecipe

from baker import leftovers, recipe
from baker.backends.fake import FakeBackend
from baker.build.options import Failure, Options
from baker.build.pipeline import build
from baker.cache import Cache
from baker.errors import BuildError
from baker.progress import Reporter

RECIPE = """\
name: fake-image
provisioners:
  - name: first
    inline: echo first
  - name: second
    inline: echo second
  - name: third
    inline: echo third
"""


def _opts(tmp_path: Path, **kw: Any) -> Options:
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    return Options(out=tmp_path / "out", cache=Cache(tmp_path / "cache"), work_root=work,
                   measure=False, **kw)  # fmt: skip


def _reporter() -> Reporter:
    return Reporter(Console(file=io.StringIO(), width=200))


def test_keep_leaves_the_machine_and_its_work_directory(
    write_recipe: WriteRecipe, tmp_path: Path
) -> None:
    fake = FakeBackend(fail_on="steps/02")
    with pytest.raises(BuildError) as failed:
        build(recipe.load(write_recipe(RECIPE)), _opts(tmp_path, on_error="keep"), _reporter(),
              backend=fake)  # fmt: skip
    message = str(failed.value)
    assert message.startswith("provisioner second failed (exit 3)")
    assert "the machine is kept" in message and "`baker clean`" in message
    assert "destroy" not in fake.journal and "close guest" not in fake.journal
    (work,) = (tmp_path / "work").iterdir()
    owner = leftovers.read_owner(work)
    assert owner is not None and owner.kept and not owner.alive()
    assert json.loads((work / "owner.json").read_text())["machine"] == fake.machines[0].name
    # What baker clean would take: the kept work directory (its owner has let it go).
    (found,) = leftovers.stale_work_dirs(tmp_path / "work")
    assert found.name == str(work) and found.why == "kept after a failure" and found.kept
    found.remove()
    assert not work.exists()


def test_ask_retries_the_failed_provisioner_on_the_same_machine(
    write_recipe: WriteRecipe, tmp_path: Path
) -> None:
    fake = FakeBackend(fail_on="steps/02")
    asked: list[Failure] = []

    def decide(failure: Failure) -> str:
        asked.append(failure)
        if len(asked) == 2:
            fake.fail_on = None  # "fixed" from the shell: the retry goes through
        return "retry"

    result = build(
        recipe.load(write_recipe(RECIPE)),
        _opts(tmp_path, on_error="ask", decide=decide),
        _reporter(),
        backend=fake,
    )
    assert result.digest.startswith("fake:")
    assert [f.step for f in asked] == ["provision", "provision"]
    assert asked[0].error.startswith("provisioner second failed")
    runs = re.findall(r"cat >/run/baker/steps/(\d+)", "\n".join(fake.journal))
    # first once, second three times (two failures, then the fix), third once.
    assert runs == ["01", "02", "02", "02", "03"]
    assert fake.journal.count("start") == 1 and fake.journal[-1] == "destroy"


def test_ask_can_abort(write_recipe: WriteRecipe, tmp_path: Path) -> None:
    fake = FakeBackend(fail_on="steps/02")
    with pytest.raises(BuildError, match="provisioner second failed"):
        build(recipe.load(write_recipe(RECIPE)),
              _opts(tmp_path, on_error="ask", decide=lambda _f: "abort"), _reporter(),
              backend=fake)  # fmt: skip
    assert fake.journal[-2:] == ["close guest", "destroy"]
    assert list((tmp_path / "work").iterdir()) == []


def test_owners_are_alive_only_while_their_process_runs(tmp_path: Path) -> None:
    me = leftovers.Owner.me()
    assert me.alive()
    assert not leftovers.Owner(me.pid, me.starttime + 1, me.boot_id).alive()  # a reused pid
    assert not leftovers.Owner(me.pid, me.starttime, "another-boot").alive()
    assert not leftovers.Owner.me(kept=True).alive()
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)  # fmt: skip
    gone = leftovers.Owner(int(child.stdout), me.starttime, me.boot_id)
    assert not gone.alive()
    for name, owner in (("baker-live", me), ("baker-gone", gone)):
        (tmp_path / name).mkdir()
        leftovers.write_owner(tmp_path / name, owner)
    (tmp_path / "baker-unknown").mkdir()  # no owner record: not provably baker's
    (tmp_path / "other").mkdir()
    found = leftovers.stale_work_dirs(tmp_path)
    assert [Path(f.name).name for f in found] == ["baker-gone"]
    assert found[0].why == f"its build (pid {gone.pid}) is gone"


def test_clean_without_libvirtd_still_cleans_work_dirs(tmp_path: Path) -> None:
    work = tmp_path / "baker-old"
    work.mkdir()
    leftovers.write_owner(work, leftovers.Owner(1, 0, "no-such-boot"))
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "baker"), "clean", "--uri",
         f"qemu+unix:///system?socket={tmp_path}/no-libvirtd.sock"],
        env={**os.environ, "BAKER_WORK_DIR": str(tmp_path)}, capture_output=True, text=True,
        check=False,
    )  # fmt: skip
    assert f"removed work dir {work}: its build (pid 1) is gone" in proc.stdout
    assert not work.exists()
    assert proc.returncode == 1
    assert proc.stderr.startswith("baker: error: the work directories are done, but no domain")
    assert len(proc.stderr.strip().splitlines()) == 1


def test_a_starting_worker_leaves_a_machine_kept_on_purpose() -> None:
    """A farm worker clears what killed builds left as it starts, but a machine kept with
    --on-error keep is somebody's look at a failure: `baker clean` ends it, not a worker."""
    from baker.cli.farm import clear_leftovers

    removed: list[str] = []

    def item(name: str, kept: bool) -> leftovers.Leftover:
        why = "kept after a failure" if kept else "its build (pid 1) is gone"
        return leftovers.Leftover("domain", name, why, lambda: removed.append(name), kept)

    said: list[str] = []
    clear_leftovers([item("baker-gone-1", False), item("baker-kept-2", True)], said.append)
    assert removed == ["baker-gone-1"]
    assert said == [
        "removed domain baker-gone-1: its build (pid 1) is gone",
        "left domain baker-kept-2: kept after a failure (`baker clean` ends it)",
    ]

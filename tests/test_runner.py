"""The step runner on steps of its own: order, cleanup in reverse of exactly what ran, the
cache planning (the furthest cached output wins), corrupted entries, no-cache."""

from __future__ import annotations

import contextlib
import datetime as dt
import io
from pathlib import Path

import pytest
from rich.console import Console

from baker.backends.base import BuildLabel
from baker.backends.fake import FakeBackend
from baker.build import runner
from baker.build.options import Options
from baker.build.runner import Saved, Step
from baker.build.state import BuildState, Context
from baker.cache import Cache, Entry
from baker.errors import BuildError
from baker.hashing import content_key
from baker.progress import Reporter
from baker.recipe.spec import Recipe, Spec


class Journal(list[str]):
    pass


class Made(Step):
    """A step that records its run and its cleanup; cached ones store one file."""

    def __init__(
        self,
        name: str,
        journal: Journal,
        *,
        cached: bool = False,
        fail: bool = False,
        extends: bool = False,
    ):
        self.name = name  # type: ignore[misc]
        self.cached = cached  # type: ignore[misc]
        self.extends = extends  # type: ignore[misc]
        self.journal = journal
        self.fail = fail

    def describe(self, ctx: Context) -> str:
        return self.name

    def key(self, ctx: Context, state: BuildState, previous: str | None) -> str:
        return content_key(self.name, {}, previous)

    def run(self, ctx: Context, state: BuildState, cleanup: contextlib.ExitStack) -> None:
        self.journal.append(f"run {self.name}")
        cleanup.callback(self.journal.append, f"undo {self.name}")
        if self.fail:
            raise BuildError(f"{self.name} failed")
        (ctx.work / self.name).write_text(f"made by {self.name}")

    def save(self, ctx: Context, state: BuildState) -> Saved:
        return Saved({"out": ctx.work / self.name}, {"by": self.name})

    def load(
        self, ctx: Context, state: BuildState, entry: Entry, cleanup: contextlib.ExitStack
    ) -> None:
        self.journal.append(f"load {self.name} {entry.file('out').read_text()}")
        cleanup.callback(self.journal.append, f"unload {self.name}")


def context(tmp_path: Path, cache: Cache, no_cache: bool = False) -> tuple[Context, Reporter]:
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    for f in work.iterdir():
        f.unlink()
    reporter = Reporter(Console(file=io.StringIO(), width=200))
    spec = Spec(Recipe(name="t"), tmp_path / "t.yaml", "0" * 64, "0" * 64)
    ctx = Context(
        spec=spec,
        opts=Options(out=tmp_path / "out", cache=cache, no_cache=no_cache),
        accel="tcg",
        backend=FakeBackend(),
        work=work,
        reporter=reporter,
        locked=None,
        lock_file=tmp_path / "t.lock",
        source_date_epoch=0,
        sign_key=None,
        started=dt.datetime.now(dt.UTC),
    )
    return ctx, reporter


def steps(journal: Journal, fail_at: str | None = None) -> list[Step]:
    names = [("a", True), ("b", False), ("c", True), ("d", False)]
    return [Made(n, journal, cached=c, fail=n == fail_at) for n, c in names]


def layered(journal: Journal) -> list[Step]:
    """b's cached output is a layer over a's (a saved machine over its disk)."""
    return [
        Made("a", journal, cached=True),
        Made("b", journal, cached=True, extends=True),
        Made("c", journal),
    ]


def state() -> BuildState:
    return BuildState(label=BuildLabel.new("t"))


def test_steps_run_in_order_and_clean_up_in_reverse(tmp_path: Path) -> None:
    journal = Journal()
    ctx, _ = context(tmp_path, Cache(tmp_path / "cache"))
    s = state()
    runner.run(steps(journal), ctx, s)
    runs = [e for e in journal if not e.startswith(("load", "unload"))]
    assert runs == ["run a", "run b", "run c", "run d", "undo d", "undo c", "undo b", "undo a"]
    assert [o.status for o in s.outcomes.values()] == ["ran"] * 4
    assert all(o.seconds is not None for o in s.outcomes.values())


@pytest.mark.parametrize("fail_at", ["a", "b", "c", "d"])
def test_a_failure_undoes_exactly_what_ran_in_reverse(tmp_path: Path, fail_at: str) -> None:
    journal = Journal()
    ctx, _ = context(tmp_path, Cache(tmp_path / "cache"))
    with pytest.raises(BuildError, match=f"{fail_at} failed"):
        runner.run(steps(journal, fail_at), ctx, state())
    ran = [e.split()[1] for e in journal if e.startswith("run")]
    assert ran == ["a", "b", "c", "d"][: ["a", "b", "c", "d"].index(fail_at) + 1]
    undone = [e.split()[1] for e in journal if e.startswith("undo")]
    assert undone == list(reversed(ran))


def test_the_furthest_cached_output_is_reused_and_earlier_steps_skipped(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    ctx, _ = context(tmp_path, cache)
    runner.run(steps(Journal()), ctx, state())
    journal = Journal()
    ctx, _ = context(tmp_path, cache)
    s = state()
    runner.run(steps(journal), ctx, s)
    # a and b are not needed: c's cached output stands for them; d runs.
    assert journal == ["load c made by c", "run d", "undo d", "unload c"]
    assert {n: o.status for n, o in s.outcomes.items()} == {
        "a": "skipped", "b": "skipped", "c": "reused", "d": "ran",
    }  # fmt: skip
    assert len(cache.entries()) == 2


def test_a_corrupted_entry_is_reported_dropped_and_rebuilt(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    ctx, _ = context(tmp_path, cache)
    runner.run(steps(Journal()), ctx, state())
    (c,) = [e for e in cache.entries() if e.step == "c"]
    (c.path / "out").write_text("made by someone else")
    journal = Journal()
    ctx, reporter = context(tmp_path, cache)
    runner.run(steps(journal), ctx, state())
    # c's entry is corrupt: a's is the furthest sound one, and b, c run again.
    assert journal[:3] == ["load a made by a", "run b", "run c"]
    shown = reporter.console.file.getvalue()  # type: ignore[attr-defined]
    assert "cache entry c/" in shown and "is corrupt (out has" in shown
    assert "dropped; rebuilding it" in shown
    (c2,) = [e for e in cache.entries() if e.step == "c"]
    assert (c2.path / "out").read_text() == "made by c"


def test_no_cache_runs_everything(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    ctx, _ = context(tmp_path, cache)
    runner.run(steps(Journal()), ctx, state())
    journal = Journal()
    ctx, _ = context(tmp_path, cache, no_cache=True)
    runner.run(steps(journal), ctx, state())
    assert [e for e in journal if e.startswith("run")] == ["run a", "run b", "run c", "run d"]


def test_an_output_that_extends_the_one_before_is_reused_with_it(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    ctx, _ = context(tmp_path, cache)
    runner.run(layered(Journal()), ctx, state())
    journal = Journal()
    ctx, _ = context(tmp_path, cache)
    s = state()
    runner.run(layered(journal), ctx, s)
    # b stands on a: both come from the cache, in order, and what loading made is undone.
    assert [e for e in journal if not e.startswith(("undo", "unload"))] == [
        "load a made by a", "load b made by b", "run c",
    ]  # fmt: skip
    assert journal[-2:] == ["unload b", "unload a"]
    assert {n: o.status for n, o in s.outcomes.items()} == {
        "a": "reused", "b": "reused", "c": "ran",
    }  # fmt: skip


def test_an_extending_output_without_the_one_below_is_not_used(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    ctx, _ = context(tmp_path, cache)
    runner.run(layered(Journal()), ctx, state())
    (a,) = [e for e in cache.entries() if e.step == "a"]
    cache.drop("a", a.key)
    journal = Journal()
    ctx, _ = context(tmp_path, cache)
    runner.run(layered(journal), ctx, state())
    # b's entry is there, but a's is not: nothing can be resumed, everything runs.
    assert [e for e in journal if e.startswith("run")] == ["run a", "run b", "run c"]

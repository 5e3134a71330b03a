"""baker.build.parallel: several builds at once, each its own process, at most --jobs running,
every line marked with its build, a summary that names the failures, and an interruption
that stops each running build once and waits for its cleanup."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import pytest

from baker.build import parallel
from baker.errors import BuildError


def child(tmp: Path, name: str, seconds: float, code: int = 0) -> parallel.Job:
    """A stand-in build: notes when it runs in a shared log, prints a progress line on stderr
    and a digest on stdout, and exits with `code`; on SIGTERM it writes that it cleaned up."""
    script = f"""
import signal, sys, time
log = open({str(tmp / "log")!r}, "a")
def stop(*_):
    log.write("{name} cleaned\\n"); log.flush(); sys.exit(130)
signal.signal(signal.SIGTERM, stop)
log.write(f"{name} start {{time.monotonic()}}\\n"); log.flush()
print("==> boot: the machine", file=sys.stderr, flush=True)
time.sleep({seconds})
log.write(f"{name} end {{time.monotonic()}}\\n"); log.flush()
print("sha256:{name}")
sys.exit({code})
"""
    return parallel.Job(name, [sys.executable, "-c", script])


def spans(tmp: Path) -> dict[str, tuple[float, float]]:
    starts, ends = {}, {}
    for line in (tmp / "log").read_text().splitlines():
        name, what, *at = line.split()
        if what == "start":
            starts[name] = float(at[0])
        elif what == "end":
            ends[name] = float(at[0])
    return {n: (starts[n], ends[n]) for n in starts if n in ends}


def test_at_most_jobs_run_at_once_and_each_line_is_marked(tmp_path: Path) -> None:
    lines: list[str] = []
    jobs = [child(tmp_path, n, 0.6) for n in ("a", "b", "c")]
    done = parallel.run_all(jobs, 2, lines.append)
    assert [j.code for j in done] == [0, 0, 0]
    assert [j.digest for j in done] == ["sha256:a", "sha256:b", "sha256:c"]
    when = spans(tmp_path)
    # a and b overlap; c starts only once one of them has ended.
    assert when["a"][0] < when["b"][1] and when["b"][0] < when["a"][1]
    assert when["c"][0] >= min(when["a"][1], when["b"][1])
    for name in ("a", "b", "c"):
        assert f"[{name}] ==> boot: the machine" in lines
        assert f"[{name}] started" in lines
        assert any(line.startswith(f"[{name}] done in ") for line in lines)
    parallel.summary(done)  # no failure: returns


def test_one_job_at_a_time_is_sequential(tmp_path: Path) -> None:
    parallel.run_all([child(tmp_path, n, 0.3) for n in ("a", "b")], 1, lambda _l: None)
    when = spans(tmp_path)
    assert when["b"][0] >= when["a"][1]


def test_a_failed_build_is_named_and_the_others_finish(tmp_path: Path) -> None:
    lines: list[str] = []
    done = parallel.run_all([child(tmp_path, "ok", 0.2), child(tmp_path, "bad", 0.1, 1)], 2,
                            lines.append)  # fmt: skip
    assert [(j.name, j.code, j.digest) for j in done] == [("ok", 0, "sha256:ok"), ("bad", 1, "")]
    assert any(line.startswith("[bad] failed (exit 1) after ") for line in lines)
    with pytest.raises(BuildError, match=r"^1 of 2 builds failed: bad \(exit 1\);"):
        parallel.summary(done)


def test_an_interruption_stops_each_running_build_and_waits(tmp_path: Path) -> None:
    jobs = [child(tmp_path, n, 60) for n in ("a", "b", "c")]
    main = threading.get_ident()

    def interrupt() -> None:
        while not (tmp_path / "log").exists() or (tmp_path / "log").read_text().count("start") < 2:
            time.sleep(0.05)
        import _thread

        assert threading.get_ident() != main
        _thread.interrupt_main()

    threading.Thread(target=interrupt, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        parallel.run_all(jobs, 2, lambda _l: None)
    log = (tmp_path / "log").read_text()
    # The two running were stopped and cleaned up; the third never started.
    assert "a cleaned" in log and "b cleaned" in log and "c start" not in log
    assert all(j.proc is None or j.proc.poll() is not None for j in jobs)


def test_two_recipes_may_not_make_one_image() -> None:
    clash = parallel.names_unique([(Path("a.yaml"), "web"), (Path("b.yaml"), "web")])
    assert clash == "a.yaml and b.yaml both make the image 'web'; give one another name."
    assert parallel.names_unique([(Path("a.yaml"), "web"), (Path("b.yaml"), "db")]) is None

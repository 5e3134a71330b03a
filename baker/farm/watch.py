"""What a submitter sees of its jobs: whether any worker listens on a job's queue (asked
of the workers themselves, over Celery's control channel), and the wait for the results,
saying which worker has each job and at which step, until they end or time runs out."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import kombu.exceptions
import redis

from baker.errors import BuildError, InputError
from baker.farm.tasks import PROGRESS

_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s?)?")
POLL_S = 1.0


def duration(text: str, option: str = "--timeout") -> float:
    """Seconds in `text`: 90, 90s, 10m, 1h30m."""
    m = _DURATION.fullmatch(text.strip())
    if not text.strip() or m is None or not any(m.groups()):
        raise InputError(f"{option} {text}: expected a duration such as 90s, 10m or 1h30m.")
    h, mins, s = (float(g) if g else 0.0 for g in m.groups())
    return h * 3600 + mins * 60 + s


def listeners(app: Any, timeout_s: float = 2.0) -> dict[str, list[str]]:
    """Each worker that answers within `timeout_s`, with the queues it takes."""
    answered = app.control.inspect(timeout=timeout_s).active_queues() or {}
    return {worker: sorted(q["name"] for q in queues) for worker, queues in answered.items()}


@dataclass
class Job:
    name: str
    result: Any  # celery's AsyncResult
    said: str = ""


def wait(
    jobs: Sequence[Job],
    timeout_s: float,
    on_done: Callable[[Job], None],
    say: Callable[[str], None],
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Poll until every job has ended, handing each to `on_done` as it ends; a line each time
    a job's worker or step changes. BuildError when `timeout_s` runs out, with what is left."""
    deadline = time.monotonic() + timeout_s
    pending = list(jobs)
    lost = ""
    while pending:
        try:
            for job in list(pending):
                state = job.result.state
                if state in ("SUCCESS", "FAILURE", "REVOKED"):
                    pending.remove(job)
                    on_done(job)
                    continue
                line = where(state, job.result.info)
                if line != job.said:
                    job.said = line
                    say(f"{job.name}: {line}")
            if lost:
                say("the broker answers again")
                lost = ""
        except (OSError, ConnectionError, redis.RedisError, kombu.exceptions.KombuError) as e:
            # A broker restarting (appendonly keeps the jobs): wait for it, as the workers do.
            if not lost:
                lost = str(e).splitlines()[0] if str(e) else type(e).__name__
                say(f"the broker does not answer ({lost}); waiting for it")
        if not pending:
            return
        if time.monotonic() >= deadline:
            left = "; ".join(f"{j.name} {j.said or 'not heard of'}" for j in pending)
            raise BuildError(f"--timeout: no result after {timeout_s:g} s: {left}.")
        sleep(POLL_S)


def where(state: str, info: object) -> str:
    """A job's state in words: queued, started on a worker, or at a step on it."""
    meta = info if isinstance(info, dict) else {}
    worker = meta.get("worker") or meta.get("hostname")
    if state == PROGRESS and worker:
        return f"on {worker}, at {meta.get('step', '?')}"
    if state == "STARTED" and worker:
        return f"started on {worker}"
    if state == "RETRY":
        return "waiting to be tried again"
    return "waiting in the queue" if state == "PENDING" else state.lower()

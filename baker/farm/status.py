"""`baker farm status`: the farm as its broker and workers see it now. The workers answer
over Celery's control channel (their queues, the jobs they run); the step a job is at is
the progress it reported (baker.farm.tasks); queued jobs are read from the broker's queue
lists without taking them, recently finished ones from the results it keeps."""

from __future__ import annotations

import base64
import json
from dataclasses import asdict, dataclass, field
from typing import Any

import redis

from baker.farm import queues

MAX_QUEUED = 200  # listed a queue; more are counted, not read
MAX_RESULTS = 500  # results looked at for the recently finished


@dataclass
class Running:
    id: str
    name: str
    step: str


@dataclass
class Worker:
    name: str
    queues: list[str]
    running: list[Running] = field(default_factory=list)


@dataclass
class Job:
    id: str
    name: str
    queue: str = ""
    state: str = ""
    outcome: str = ""  # a digest, or the error
    when: str = ""


@dataclass
class Farm:
    workers: list[Worker]
    queued: list[Job]
    finished: list[Job]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def gather(app: Any, broker: str, timeout_s: float = 2.0, recent: int = 10) -> Farm:
    inspect = app.control.inspect(timeout=timeout_s)
    answered = inspect.active_queues() or {}
    active = inspect.active() or {}
    workers = []
    for name in sorted(answered):
        served = sorted(q["name"] for q in answered[name])
        running = [_running(app, t) for t in active.get(name, [])]
        workers.append(Worker(name, served, running))
    db = redis.Redis.from_url(broker, socket_timeout=10)
    known = {q for w in workers for q in w.queues} | set(_every_queue())
    queued = [job for q in sorted(known) for job in _queued(db, q)]
    return Farm(workers, queued, _finished(db, recent))


def _every_queue() -> list[str]:
    return [q for arch in ("amd64", "arm64") for q in queues.for_host("kvm", arch, ec2=True)]


def _running(app: Any, task: dict[str, Any]) -> Running:
    args = task.get("args") or [{}]
    name = args[0].get("name", "?") if isinstance(args[0], dict) else "?"
    info = app.AsyncResult(task["id"]).info
    step = info.get("step", "started") if isinstance(info, dict) else "started"
    return Running(task["id"], str(name), str(step))


def _queued(db: redis.Redis, queue: str) -> list[Job]:
    found = []
    for raw in db.lrange(queue, 0, MAX_QUEUED - 1) or []:
        try:
            message = json.loads(raw)
            args = json.loads(base64.b64decode(message["body"]))[0]
            found.append(Job(message["headers"]["id"], str(args[0]["name"]), queue, "queued"))
        except (ValueError, KeyError, IndexError, TypeError):
            found.append(Job("?", "(not a baker job)", queue, "queued"))
    return found


def _finished(db: redis.Redis, recent: int) -> list[Job]:
    keys = []
    for key in db.scan_iter(match="celery-task-meta-*", count=100):
        keys.append(key)
        if len(keys) >= MAX_RESULTS:
            break
    jobs = []
    for raw in db.mget(keys) if keys else []:
        if raw is None:
            continue  # expired since it was listed
        try:
            meta = json.loads(raw)
        except ValueError:
            continue
        if meta.get("status") not in ("SUCCESS", "FAILURE"):
            continue
        result = meta.get("result")
        if meta["status"] == "SUCCESS" and isinstance(result, dict):
            job = Job(meta["task_id"], str(result.get("name")), state="built",
                      outcome=str(result.get("digest")))  # fmt: skip
        else:
            error = result.get("exc_message") if isinstance(result, dict) else result
            text = " ".join(map(str, error)) if isinstance(error, list) else str(error)
            job = Job(meta["task_id"], "?", state="failed", outcome=text)
        job.when = str(meta.get("date_done") or "")
        jobs.append(job)
    return sorted(jobs, key=lambda j: j.when, reverse=True)[:recent]


def render(farm: Farm) -> list[str]:
    lines = [f"workers: {len(farm.workers)}"]
    for w in farm.workers:
        lines.append(f"  {w.name}: {', '.join(w.queues)}")
        lines += [f"    running {r.name} ({r.id}), at {r.step}" for r in w.running]
        if not w.running:
            lines.append("    idle")
    lines.append(f"queued: {len(farm.queued)}")
    lines += [f"  {j.name} ({j.id}) on {j.queue}" for j in farm.queued]
    lines.append(f"recently finished: {len(farm.finished)}")
    lines += [f"  {j.when[:19]} {j.name} {j.state}: {j.outcome}" for j in farm.finished]
    return lines

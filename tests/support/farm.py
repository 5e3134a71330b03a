"""A farm on this machine for e2e tests: Debian's redis-server on loopback and `baker worker`
processes, each logging to a file."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from baker.edge.ssh import free_port
from support.bakerun import BAKER, ROOT


class Redis:
    """Debian's redis-server on loopback, appending every write (as the README says to run
    it), so that it can be restarted and keep its queues."""

    def __init__(self, data: Path) -> None:
        self.port, self.data = free_port(), data
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--dir",
             str(self.data), "--appendonly", "yes", "--save", ""],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 20
        while not listening(self.port):
            assert time.monotonic() < deadline and self.proc.poll() is None, "no redis-server"
            time.sleep(0.1)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


class Worker:
    """`baker worker` as an operator starts it, its output appended to `log`; ready once
    Celery says so."""

    def __init__(
        self,
        name: str,
        broker: str,
        artifacts: Path,
        work: Path,
        log: Path,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name, self.log = name, log
        self.start = log.stat().st_size if log.exists() else 0  # this run's part of the log
        env = {**os.environ, "BAKER_WORK_DIR": str(work), **(env or {})}
        self.proc = subprocess.Popen(
            [
                str(BAKER),
                "worker",
                "--broker",
                broker,
                "--artifacts",
                str(artifacts),
                "--name",
                name,
            ],
            cwd=ROOT,
            env=env,
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while "ready." not in self.output():
            assert time.monotonic() < deadline and self.proc.poll() is None, self.output()[-3000:]
            time.sleep(0.2)

    def output(self) -> str:
        """What this run of the worker has logged."""
        with self.log.open("rb") as f:
            f.seek(self.start)
            return f.read().decode(errors="replace")

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)  # the worker, its pool and its build, at once
        self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # warm shutdown: the running job finishes
            self.proc.wait(600)

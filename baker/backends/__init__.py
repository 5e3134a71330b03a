"""The backend interface: start a machine from a disk, give an SSH endpoint, stop it, and
hand back its disk. libvirt is one implementation; a cloud API is another."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from baker.edge.ssh import BuildKeys, Endpoint


class Machine(Protocol):
    endpoint: Endpoint
    disk: Path  # what the machine wrote to: captured after it stops

    def alive(self) -> bool: ...

    def console_tail(self, lines: int = 15) -> str: ...

    def wait_stopped(self, timeout: float) -> bool: ...

    def destroy(self) -> None:
        """Stop at once and release everything; safe to call twice."""


class Backend(Protocol):
    def start(self, base_disk: Path, keys: BuildKeys, workdir: Path, name: str) -> Machine: ...

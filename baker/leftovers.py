"""What a build leaves while it runs, and what `baker clean` may take away.

Every work directory holds `owner.json`, and every libvirt domain the same record in its
metadata: the process that made it (pid, its start time, the boot it ran in), so a later
baker can tell a running build's things from those of a build that is gone (killed, or kept
on purpose with `--on-error keep`). Only things whose owner is provably gone are removed.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

OWNER_FILE = "owner.json"


@dataclass(frozen=True)
class Owner:
    pid: int
    starttime: int  # the process's start, in clock ticks after boot (/proc/PID/stat)
    boot_id: str
    kept: bool = False  # left running on purpose: gone from baker's view, not from the user's

    @classmethod
    def me(cls, kept: bool = False) -> Owner:
        return cls(os.getpid(), _starttime(os.getpid()) or 0, _boot_id(), kept)

    def alive(self) -> bool:
        """Whether the owning process still runs (a reused pid has another start time)."""
        if self.kept or self.boot_id != _boot_id():
            return False
        return _starttime(self.pid) == self.starttime

    def as_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> Owner | None:
        try:
            return cls(int(d["pid"]), int(d["starttime"]), str(d["boot_id"]),  # type: ignore[call-overload]
                       bool(d.get("kept", False)))  # fmt: skip
        except (KeyError, TypeError, ValueError):
            return None


def _starttime(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[19])


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def write_owner(work: Path, owner: Owner, **extra: object) -> None:
    (work / OWNER_FILE).write_text(json.dumps({**owner.as_dict(), **extra}, sort_keys=True))


def read_owner(work: Path) -> Owner | None:
    try:
        body = json.loads((work / OWNER_FILE).read_text())
    except (OSError, ValueError):
        return None
    return Owner.from_dict(body) if isinstance(body, dict) else None


@dataclass(frozen=True)
class Leftover:
    kind: str  # "domain" or "work dir"
    name: str
    why: str
    remove: Callable[[], None]


def stale_work_dirs(root: Path) -> list[Leftover]:
    """baker's work directories under `root` whose build is gone."""
    found = []
    for path in sorted(root.glob("baker-*")):
        if not path.is_dir() or path.is_symlink():
            continue
        owner = read_owner(path)
        if owner is None or owner.alive():
            continue  # not provably ours, or still in use
        why = "kept after a failure" if owner.kept else f"its build (pid {owner.pid}) is gone"
        found.append(Leftover("work dir", str(path), why, _remover(path)))
    return found


def _remover(path: Path) -> Callable[[], None]:
    return lambda: shutil.rmtree(path, ignore_errors=True)

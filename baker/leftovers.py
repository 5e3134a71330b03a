"""What a build leaves while it runs, and what `baker clean` may take away: work directories
(where they go, `work_root`; one for a build, `workdir`) and the records that say whose they are.

Every work directory holds `owner.json`, and every libvirt domain the same record in its
metadata: the process that made it (pid, its start time, the boot it ran in), so a later
baker can tell a running build's things from those of a build that is gone (killed, or kept
on purpose with `--on-error keep`). Only things whose owner is provably gone are removed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from baker.edge import mounts

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
    kept: bool = False  # left on purpose (--on-error keep): for `baker clean` only


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
        found.append(Leftover("work dir", str(path), why, _remover(path), owner.kept))
    return found


def _remover(path: Path) -> Callable[[], None]:
    return lambda: shutil.rmtree(path, ignore_errors=True)


def work_root(root: Path | None = None) -> Path:
    """Where work directories go: `root`, $BAKER_WORK_DIR, or /var/tmp."""
    return root or Path(os.environ.get("BAKER_WORK_DIR", "/var/tmp"))


@contextlib.contextmanager
def workdir(root: Path | None) -> Iterator[Path]:
    """A throwaway work directory, removed on the way out unless the build kept it (its
    owner.json says so: `--on-error keep`); `baker clean` removes it then."""
    base = work_root(root)
    base.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix="baker-", dir=base))
    # libvirt runs qemu as its own user: it must traverse to the overlay it is given.
    path.chmod(0o711)
    write_owner(path, Owner.me())
    try:
        yield path
    finally:
        owner = read_owner(path)
        if owner is None or not owner.kept:
            # A step's own cleanup unmounts what it mounted; this catches a mount a stop
            # signal cut off half-way, which rmtree would otherwise reach into.
            mounts.release_under(path)
            shutil.rmtree(path, ignore_errors=True)

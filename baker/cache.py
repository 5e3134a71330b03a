"""The cache: package files by sha256 (debs/), and step outputs by content key (steps/).

A step entry is a directory `steps/<step>/<key>/` holding the step's output files and
`entry.json` (each file's sha256 and size, and the step's own metadata). It is written in a
staging directory and renamed into place whole, so no reader ever sees half an entry; once
there it is never changed. Every use checks every file against its recorded hash first: a
corrupted entry is reported, dropped and rebuilt, never used. A build holds a shared lock on
each entry it uses until it ends; pruning takes an exclusive one and leaves busy entries be.
The runner (baker.build.runner), not the steps, decides what is looked up and stored.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from baker.hashing import sha256_file

FORMAT = 1
ENTRY_FILE = "entry.json"
Report = Callable[[str], None]


def default_dir() -> Path:
    # libvirt's qemu runs as its own user and must traverse to a cached base disk, so root's
    # cache lives outside /root (mode 0700).
    if env := os.environ.get("BAKER_CACHE_DIR"):
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/cache/baker")
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "baker"


@dataclass
class Entry:
    """A step's cached output, verified, and held (shared lock) until `release()`."""

    step: str
    key: str
    path: Path
    files: dict[str, dict[str, Any]]
    meta: dict[str, Any]
    created: str
    _lock: IO[bytes] | None = field(default=None, repr=False)

    def file(self, name: str) -> Path:
        return self.path / name

    def release(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None


@dataclass(frozen=True)
class EntryInfo:
    """One entry as `baker cache list` shows it."""

    step: str
    key: str
    path: Path
    size: int  # bytes allocated on disk (a sparse disk counts what it holds)
    created: str
    last_used: float  # epoch seconds


class Corrupt(Exception):
    pass


class Cache:
    """Packages (debs/) by sha256, and step outputs (steps/) by content key. A rebuild that
    must not trust earlier step outputs gives its own `steps_root`."""

    def __init__(self, root: Path | None = None, steps_root: Path | None = None) -> None:
        self.root = root or default_dir()
        self.steps_root = steps_root or self.root

    # --- packages ----------------------------------------------------------------------------

    def _dir(self, path: Path) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(0o755)
        return path

    def deb_path(self, sha256: str) -> Path:
        return self._dir(self.root / "debs") / f"{sha256}.deb"

    def deb(self, sha256: str) -> Path | None:
        """The cached .deb with that sha256, if there is one (callers verify it on use)."""
        path = self.deb_path(sha256)
        return path if path.exists() else None

    def put_deb(self, src: Path, sha256: str) -> None:
        target = self.deb_path(sha256)
        if not target.exists():
            with self.staging(target) as tmp:
                shutil.copyfile(src, tmp)

    @contextlib.contextmanager
    def staging(self, target: Path) -> Iterator[Path]:
        """A temporary name beside `target`, renamed into place only if the block succeeds,
        so a half-written file is never taken for a cached one."""
        tmp = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            yield tmp
            tmp.rename(target)
        finally:
            tmp.unlink(missing_ok=True)

    # --- step entries ------------------------------------------------------------------------

    @property
    def steps_dir(self) -> Path:
        return self.steps_root / "steps"

    def _entry_dir(self, step: str, key: str) -> Path:
        return self._dir(self.steps_dir / step) / key

    def _lock_file(self, step: str, key: str) -> Path:
        return self._dir(self.steps_dir / ".locks") / f"{step}-{key}.lock"

    def _lock(self, step: str, key: str, exclusive: bool, wait: bool) -> IO[bytes] | None:
        f = self._lock_file(step, key).open("ab")
        flags = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
        try:
            fcntl.flock(f, flags if wait else flags | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            return None
        return f

    def lookup(self, step: str, key: str, report: Report) -> Entry | None:
        """The verified entry for (step, key), held until released; None if there is none. A
        corrupted entry is reported through `report`, dropped, and counts as none."""
        path = self._entry_dir(step, key)
        if not path.is_dir():
            return None
        lock = self._lock(step, key, exclusive=False, wait=True)
        assert lock is not None
        try:
            entry = _read_entry(path, step, key)
            _verify(entry)
        except FileNotFoundError:
            lock.close()  # pruned while we waited for the lock
            return None
        except Corrupt as e:
            lock.close()
            dropped = self.drop(step, key)
            report(
                f"cache entry {step}/{key[:16]} is corrupt ({e}): "
                + ("dropped; rebuilding it" if dropped else "in use elsewhere; not using it")
            )
            return None
        except BaseException:
            lock.close()
            raise
        entry._lock = lock
        with contextlib.suppress(OSError):
            os.utime(path)  # its last use, for pruning
        return entry

    def store(
        self,
        step: str,
        key: str,
        files: Mapping[str, Path],
        meta: Mapping[str, Any],
        known: Mapping[str, str] | None = None,
    ) -> Entry:
        """Move `files` (entry name -> current path) into a new entry for (step, key), held;
        `known` gives sha256 hex digests the step computed already. If another build stored
        the same key meanwhile, theirs stays and is returned: one entry per key."""
        target = self._entry_dir(step, key)
        staging = target.with_name(f".{key}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
        staging.mkdir(mode=0o755)
        try:
            recorded: dict[str, dict[str, Any]] = {}
            for name, src in files.items():
                dest = staging / name
                shutil.move(src, dest)
                # Readable by all (libvirt's qemu user reads a cached disk), but what was made
                # for its owner alone (a saved machine's keys) stays so.
                private = dest.stat().st_mode & 0o077 == 0
                dest.chmod(0o600 if private else 0o644)
                digest = (known or {}).get(name) or sha256_file(dest)
                recorded[name] = {"sha256": digest, "size": dest.stat().st_size}
            created = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
            body = {"format": FORMAT, "step": step, "key": key, "created": created,
                    "files": recorded, "meta": dict(meta)}  # fmt: skip
            (staging / ENTRY_FILE).write_text(json.dumps(body, indent=2, sort_keys=True))
            self._install(step, key, staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        lock = self._lock(step, key, exclusive=False, wait=True)
        assert lock is not None
        entry = _read_entry(target, step, key)
        entry._lock = lock
        return entry

    def _install(self, step: str, key: str, staging: Path, target: Path) -> None:
        try:
            staging.rename(target)
            return
        except OSError:
            if not target.exists():
                raise
        # An entry is there already: a build that finished first, or a corrupt one. Keep a
        # sound one; replace a corrupt one unless another build is using it.
        try:
            _verify(_read_entry(target, step, key))
            return
        except (Corrupt, FileNotFoundError):
            pass
        if self.drop(step, key):
            with contextlib.suppress(OSError):
                staging.rename(target)

    def drop(self, step: str, key: str) -> bool:
        """Remove an entry unless a build holds it; True if it is gone."""
        lock = self._lock(step, key, exclusive=True, wait=False)
        if lock is None:
            return False
        try:
            path = self._entry_dir(step, key)
            if path.exists():
                trash = path.with_name(f".trash-{key}.{uuid.uuid4().hex[:8]}")
                path.rename(trash)
                shutil.rmtree(trash, ignore_errors=True)
            return True
        finally:
            lock.close()

    def entries(self) -> list[EntryInfo]:
        out: list[EntryInfo] = []
        if not self.steps_dir.is_dir():
            return out
        for step_dir in sorted(p for p in self.steps_dir.iterdir() if not p.name.startswith(".")):
            for path in sorted(p for p in step_dir.iterdir() if not p.name.startswith(".")):
                try:
                    body = json.loads((path / ENTRY_FILE).read_text())
                    size = sum(f.stat().st_blocks * 512 for f in path.iterdir())
                    used = path.stat().st_mtime
                except (OSError, ValueError):
                    body, size, used = {}, 0, 0.0
                out.append(
                    EntryInfo(step_dir.name, path.name, path, size, str(body.get("created", "?")),
                              used)
                )  # fmt: skip
        return out

    def prune(
        self, older_than_s: float | None = None, max_size: int | None = None
    ) -> tuple[list[EntryInfo], list[EntryInfo]]:
        """Remove entries unused for `older_than_s`, then the least recently used until the
        rest fit in `max_size` bytes. Returns (removed, kept because a build holds them)."""
        now = dt.datetime.now(dt.UTC).timestamp()
        entries = sorted(self.entries(), key=lambda e: e.last_used)
        doomed = [
            e for e in entries if older_than_s is not None and now - e.last_used > older_than_s
        ]
        if max_size is not None:
            total = sum(e.size for e in entries if e not in doomed)
            for e in entries:
                if total <= max_size:
                    break
                if e not in doomed:
                    doomed.append(e)
                    total -= e.size
        removed: list[EntryInfo] = []
        busy: list[EntryInfo] = []
        for e in doomed:
            (removed if self.drop(e.step, e.key) else busy).append(e)
        return removed, busy


def _read_entry(path: Path, step: str, key: str) -> Entry:
    try:
        body = json.loads((path / ENTRY_FILE).read_text())
    except FileNotFoundError:
        if not path.exists():
            raise
        raise Corrupt(f"its {ENTRY_FILE} is missing") from None
    except (OSError, ValueError) as e:
        raise Corrupt(f"its {ENTRY_FILE} cannot be read: {e}") from None
    if not isinstance(body, dict) or body.get("format") != FORMAT or body.get("key") != key:
        raise Corrupt(f"its {ENTRY_FILE} is not a format-{FORMAT} entry for this key")
    files, meta = body.get("files"), body.get("meta")
    if not isinstance(files, dict) or not isinstance(meta, dict):
        raise Corrupt(f"its {ENTRY_FILE} lacks files or meta")
    return Entry(step, key, path, files, meta, str(body.get("created", "")))


def _verify(entry: Entry) -> None:
    for name, info in entry.files.items():
        f = entry.file(name)
        try:
            if f.stat().st_size != info.get("size"):
                raise Corrupt(f"{name} has {f.stat().st_size} bytes, not {info.get('size')}")
            if sha256_file(f) != info.get("sha256"):
                raise Corrupt(f"{name} does not match its recorded sha256")
        except FileNotFoundError:
            raise Corrupt(f"{name} is missing") from None

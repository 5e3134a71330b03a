"""What the test processes share when pytest-xdist runs the suite in several workers.

`make test` runs two workers: a build leaves much of a second core idle (mmdebstrap's
single-threaded dpkg, downloads, captures, waits). The e2e builds are shared as in one process:
the controller makes one directory for the session (step cache, work and output
directories, keys), and `once` makes a session fixture's value in whichever worker asks
first while the other waits for it. A test that stops a host service other tests use
(libvirtd) is marked `exclusive` and runs while no other e2e test does (the unit tests use
no host service and go on)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import pickle
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

ROOT_ENV = "BAKER_TESTS_SHARED"
T = TypeVar("T")


@dataclass(frozen=True)
class _Failed:
    """A shared fixture that failed in the worker that made it: the others fail alike
    instead of building it again."""

    message: str


def make_root() -> Path:
    """In the controller (or a run without workers): the session's shared directory. Not
    under /tmp/pytest-of-root (0700): libvirt's qemu user must reach the overlays in it."""
    root = Path(tempfile.mkdtemp(prefix="baker-tests-", dir="/var/tmp"))
    root.chmod(0o711)
    os.environ[ROOT_ENV] = str(root)  # the workers are started after this, with it
    return root


def remove_root(root: Path) -> None:
    shutil.rmtree(root, ignore_errors=True)
    os.environ.pop(ROOT_ENV, None)


def root() -> Path:
    return Path(os.environ[ROOT_ENV])


def directory(name: str, mode: int = 0o711) -> Path:
    path = root() / name
    path.mkdir(mode=mode, exist_ok=True)
    path.chmod(mode)  # mkdir's mode is masked by the umask
    return path


@contextlib.contextmanager
def _locked(path: Path, kind: int) -> Iterator[None]:
    with open(path, "a") as f:
        fcntl.flock(f, kind)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def once(name: str, make: Callable[[], T]) -> T:
    """`make()` run once for the whole session, whichever worker asks first; the others
    wait for it and get the same value (values are pickled: paths, dataclasses, processes'
    results)."""
    fixtures = directory("fixtures", 0o700)
    done = fixtures / f"{name}.pickle"
    with _locked(fixtures / f"{name}.lock", fcntl.LOCK_EX):
        if done.exists():
            value = pickle.loads(done.read_bytes())
            if isinstance(value, _Failed):
                pytest.fail(f"{name}, made by another worker, failed: {value.message}")
            return value  # type: ignore[no-any-return]
        try:
            value = make()
        except Exception as e:
            done.write_bytes(pickle.dumps(_Failed(str(e)[-4000:])))
            raise
        done.write_bytes(pickle.dumps(value))
        return value


@contextlib.contextmanager
def host_services(exclusive: bool) -> Iterator[None]:
    """Held around each e2e test (setup, call and teardown): shared by every one, exclusive
    for one that stops what the others need."""
    with _locked(root() / "host-services.lock", fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH):
        yield

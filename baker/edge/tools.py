"""Running the host's tools (mmdebstrap, mkfs.ext4, sfdisk, qemu-img, grub-mkimage, tar).

One place turns a missing tool or a failing command into a BuildError with the tail of what
the tool said, so no step has to; a command that failed for want of space becomes a DiskFull
naming the full file system, looked at the moment the tool stopped.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from baker.errors import BuildError, DiskFull
from baker.progress import human

# The Debian package that brings each tool, for the error a user sees when one is missing.
PACKAGES = {
    "mmdebstrap": "mmdebstrap",
    "mkfs.ext4": "e2fsprogs (from bookworm-backports)",
    "sfdisk": "fdisk",
    "qemu-img": "qemu-utils",
    "qemu-system-x86_64": "qemu-system-x86",
    "grub-mkimage": "grub-pc-bin",
    "mkfs.fat": "dosfstools",
    "mcopy": "mtools",
    "genisoimage": "genisoimage",
    "tar": "tar",
    "mount": "mount",
    "umount": "mount",
}


def require(tool: str) -> str:
    path = shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin")
    if path is None:
        pkg = PACKAGES.get(tool, tool)
        raise BuildError(
            f"{tool} is not installed (Debian package {pkg}): run scripts/setup-host.sh."
        )
    return path


def run(
    argv: Sequence[str | Path],
    *,
    env: Mapping[str, str] | None = None,
    stdin: bytes | None = None,
    cwd: Path | None = None,
    on_line: Callable[[str], None] | None = None,
    what: str | None = None,
) -> str:
    """Run a command; return its stdout. Each stderr/stdout line goes to `on_line` as it comes
    when given (long steps show progress), and a failure raises BuildError with its tail."""
    args = [str(a) for a in argv]
    args[0] = require(args[0])
    full_env = {**os.environ, **(env or {})}
    what = what or Path(args[0]).name
    if on_line is None:
        with _child(
            args, stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=full_env, cwd=cwd,
        ) as proc:  # fmt: skip
            raw_out, raw_err = proc.communicate(stdin)
        out, err = raw_out.decode(errors="replace"), raw_err.decode(errors="replace")
        if proc.returncode != 0:
            raise _failed(what, proc.returncode, err or out, args, cwd)
        return out
    lines: list[str] = []
    with _child(
        args,
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=full_env,
        cwd=cwd,
    ) as proc:
        if stdin is not None and proc.stdin:
            proc.stdin.write(stdin)
            proc.stdin.close()
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip()
            lines.append(line)
            del lines[:-200]
            on_line(line)
        code = proc.wait()
    if code != 0:
        raise _failed(what, code, "\n".join(lines), args, cwd)
    return "\n".join(lines)


@contextlib.contextmanager
def _child(args: list[str], **popen: Any) -> Iterator[subprocess.Popen[bytes]]:
    """A child process that is killed and waited for when its caller is interrupted.

    subprocess.run waits only a quarter of a second after a KeyboardInterrupt: a tool still
    finishing (a mount taking effect, a file being written) would then act after the cleanup
    that was to undo it had already run."""
    with subprocess.Popen(args, **popen) as proc:
        try:
            yield proc
        except BaseException:
            proc.kill()
            proc.wait()
            raise


def _failed(what: str, code: int, output: str, args: Sequence[str], cwd: Path | None) -> BuildError:
    """A tool's failure; a DiskFull when it said it ran out of space, or when a file system it
    wrote to has (nearly) nothing left: not every tool says so (mkfs.ext4 reports a short
    write, mmdebstrap what its hook or apt said)."""
    said = f"{what} failed (exit {code}): {_tail(output)}"
    written = [*_paths(args[1:]), *([cwd] if cwd else [])]
    found = fullest(written)
    if found is not None and found.nearly_full:
        return disk_full(found, said)
    if out_of_space(output):
        # Tools keep their scratch in TMPDIR (mmdebstrap its chroot): one of these filled.
        found = fullest([*written, Path(tempfile.gettempdir())])
        if found is not None:
            return disk_full(found, said)
    return BuildError(said)


# How tools say a write failed for want of space: strerror(ENOSPC) and (EDQUOT), and GNU
# tar's own words for a short write ("Wrote only 8192 of 10240 bytes").
_NO_SPACE = re.compile(
    r"No space left on device|Disk quota exceeded|Wrote only \d+ of \d+ bytes|\bENOSPC\b"
)
# An absolute path in an argument (`--file=/w/x.tar`, `of=/w/x`, `sync-out /a /b`); not the
# slashes of a URL (`http://`, `copy:///`) nor the inside of a relative path.
_PATH = re.compile(r"(?<![\w.:/])/[^\s'\",;]*")


def out_of_space(text: str) -> bool:
    return _NO_SPACE.search(text) is not None


@dataclass(frozen=True)
class Space:
    """A file system, named by its mount point, and its bytes at the moment it was looked at."""

    mount: Path
    free: int  # what an unprivileged writer may still use: df's "Avail"
    total: int

    @property
    def nearly_full(self) -> bool:
        # Under 1% left (at least 1 MiB, at most 64 MiB, and under a sixteenth of a small
        # one): a write that failed then most likely failed for want of space; writes come
        # in blocks and clusters, so a full disk seldom shows exactly 0 free.
        return self.free < min(max(self.total // 100, 1 << 20), 64 << 20, self.total // 16)


def space(path: Path) -> Space | None:
    """The writable file system `path` is on (or will be, if it does not exist yet); None for
    one that takes no writes (read-only, or a pseudo file system without blocks)."""
    at = Path(os.path.abspath(path))
    try:
        while not at.exists():
            at = at.parent
        st = os.statvfs(at)
        mount = at
        while not os.path.ismount(mount):
            mount = mount.parent
    except OSError:
        return None
    if st.f_blocks == 0 or st.f_flag & os.ST_RDONLY:
        return None
    return Space(mount, st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize)


def fullest(paths: Iterable[Path]) -> Space | None:
    """Of the file systems `paths` are on, the one a failed write most likely filled: the one
    with the least room left (a nearly full one first; a small one that has room again, once
    what filled it is gone, before a large one)."""
    spaces = {s.mount: s for p in paths if (s := space(p)) is not None}
    return min(spaces.values(), key=lambda s: (not s.nearly_full, s.free), default=None)


def disk_full(found: Space, said: str, step: str | None = None, need: str = "") -> DiskFull:
    """The sentence for a write that failed on `found`: `step NAME: the disk at MOUNT is full
    (FREE free of SIZE); NEED; SAID`, the step and the need where known. A disk that has room
    again when looked at (what filled it was removed on the way out) "was" full."""
    state = "is full (" if found.nearly_full else "was full ("
    now = "" if found.nearly_full else " now"
    parts = [
        f"{f'step {step}: ' if step else ''}the disk at {found.mount} {state}"
        f"{human(found.free)} free of {human(found.total)}{now})",
        *([need] if need else []),
        said,
    ]
    return DiskFull("; ".join(parts), mount=found.mount, free=found.free, total=found.total,
                    full=found.nearly_full, said=said)  # fmt: skip


def _paths(args: Sequence[str]) -> list[Path]:
    return [Path(m) for a in args for m in _PATH.findall(a)]


def _tail(text: str, n: int = 8) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return " | ".join(lines[-n:]) or "no output"


# How each tool says its version: recorded in build.json, and part of the content key of
# every step that runs the tool, so a new version of a tool never reuses an old output.
VERSION_ARGS = {
    "qemu": ("qemu-system-x86_64", "--version"),
    "qemu-img": ("qemu-img", "--version"),
    "mmdebstrap": ("mmdebstrap", "--version"),
    "mke2fs": ("mke2fs", "-V"),
    "sfdisk": ("sfdisk", "--version"),
    "grub-mkimage": ("grub-mkimage", "--version"),
    "tar": ("tar", "--version"),
    "mkfs.fat": ("dpkg-query", "-W", "-f=dosfstools ${Version}", "dosfstools"),
    "mcopy": ("mcopy", "--version"),
    "ovmf": ("dpkg-query", "-W", "-f=ovmf ${Version}", "ovmf"),
    "pytest-testinfra": (
        sys.executable,
        "-c",
        "import testinfra, importlib.metadata as m; print(m.version('pytest-testinfra'))",
    ),
}


def versions(*names: str) -> dict[str, str]:
    """The versions of the named tools (keys of VERSION_ARGS)."""
    return {name: version(VERSION_ARGS[name]) for name in names}


@functools.cache
def version(argv: tuple[str, ...]) -> str:
    """First line a tool prints about its version; empty when unavailable."""
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    text = (proc.stdout or proc.stderr).strip()
    return text.splitlines()[0] if text else ""

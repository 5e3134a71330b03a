"""Running the host's tools (mmdebstrap, mkfs.ext4, sfdisk, qemu-img, grub-mkimage, tar).

One place turns a missing tool or a failing command into a BuildError with the tail of what
the tool said, so no step has to.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from baker.errors import BuildError

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
            raise BuildError(f"{what} failed (exit {proc.returncode}): {_tail(err or out)}")
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
        raise BuildError(f"{what} failed (exit {code}): {_tail(chr(10).join(lines))}")
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

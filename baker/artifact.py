"""The publish step: the finished artifact directory appears in place at once, or not at all."""

from __future__ import annotations

import ctypes
import os
import shutil
import tempfile
from pathlib import Path

from baker.hashing import sha256_file

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux renameat2); False where the kernel or libc lacks it."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except AttributeError:
        return False
    rc = fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    return rc == 0


def sha256sums(directory: Path) -> str:
    lines = [
        f"{sha256_file(f)}  {f.name}\n"
        for f in sorted(directory.iterdir())
        if f.is_file() and f.name != "SHA256SUMS"
    ]
    return "".join(lines)


def publish(out: Path, name: str, files: dict[str, Path]) -> Path:
    """Move `files` (artifact name -> current path) into `out/name`, with SHA256SUMS.

    They are gathered in a hidden staging directory beside the target, then swapped in by a
    rename: a reader sees the old artifact or the new one, never a mix or a partial one."""
    out.mkdir(parents=True, exist_ok=True)
    final = out / name
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".partial", dir=out))
    try:
        for artifact_name, src in files.items():
            shutil.move(src, staging / artifact_name)
        (staging / "SHA256SUMS").write_text(sha256sums(staging))
        for f in staging.iterdir():
            f.chmod(0o644)
            with f.open("rb") as fh:
                os.fsync(fh.fileno())
        staging.chmod(0o755)
        if final.exists() and _exchange(staging, final):
            shutil.rmtree(staging)  # it now holds the previous artifact
        else:
            if final.exists():
                shutil.rmtree(final)
            staging.rename(final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return final

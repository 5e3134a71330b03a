"""Helpers for the end-to-end tests: running the real baker CLI and checking what it left."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from baker.hashing import sha256_file

ROOT = Path(__file__).resolve().parents[2]
BAKER = Path(sys.executable).parent / "baker"
BUILD_TIMEOUT_S = 1800


@dataclass(frozen=True)
class Baked:
    artifact: Path
    digest: str
    stdout: str
    stderr: str


def run_baker(*args: str | Path, work: Path, **kwargs: object) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BAKER_WORK_DIR": str(work)}
    return subprocess.run(
        [str(BAKER), *map(str, args)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
        check=False,
        **kwargs,  # type: ignore[arg-type]
    )


# The tests' short name for the one streaming hash baker itself uses.
sha256 = sha256_file


def domains() -> set[str]:
    out = subprocess.run(
        ["virsh", "-c", "qemu:///system", "list", "--all", "--name"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {line.strip() for line in out.splitlines() if line.strip()}


# No network for the second build: apt and urllib go through a proxy nobody listens on.
OFFLINE = {"http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9",
           "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9"}  # fmt: skip


def baker(*args: str | Path, cache: Path, work: Path, env: dict[str, str] | None = None,
          check: bool = True) -> subprocess.CompletedProcess[str]:  # fmt: skip
    full_env = {**os.environ, "BAKER_CACHE_DIR": str(cache), "BAKER_WORK_DIR": str(work),
                **(env or {})}  # fmt: skip
    proc = subprocess.run([str(BAKER), *map(str, args)], cwd=ROOT, env=full_env,
                          capture_output=True, text=True, check=False, timeout=1800)  # fmt: skip
    if check:
        assert proc.returncode == 0, proc.stderr[-4000:]
    return proc

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


@dataclass(frozen=True)
class AirGap:
    """The locked web image carried across an air gap: exported with every format and its
    sources, imported into a fresh directory and package cache, and rebuilt there."""

    bundle: Path
    exported: subprocess.CompletedProcess[str]
    into: Path
    imported: subprocess.CompletedProcess[str]
    cache: Path
    rebuilt: subprocess.CompletedProcess[str]
    artifact: Path  # what the rebuild made (rebuild --check --keep)


def run_baker(*args: str | Path, work: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BAKER_WORK_DIR": str(work)}
    return subprocess.run(
        [str(BAKER), *map(str, args)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
        check=False,
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


def qemu_processes(mentioning: Path) -> list[str]:
    """The qemu processes whose command line names something under `mentioning`."""
    out = subprocess.run(["pgrep", "-af", "qemu-system"], capture_output=True, text=True,
                         check=False).stdout  # fmt: skip
    return [line for line in out.splitlines() if str(mentioning) in line]


def forwarded_port(stderr: str) -> int | None:
    """The loopback port the build machine's SSH was forwarded from, if it got that far."""
    import re

    found = re.findall(r"SSH answered after [\d.]+ s on (\d+)", stderr)
    return int(found[-1]) if found else None


def port_closed(port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex(("127.0.0.1", port)) != 0


def assert_nothing_left(out: Path, work: Path, name: str, domains_before: set[str],
                        stderr: str = "") -> None:  # fmt: skip
    """No partial artifact, no work directory, no domain, no qemu, no forwarded port."""
    assert not out.exists() or list(out.iterdir()) == [], f"left in out/: {list(out.iterdir())}"
    assert list(work.iterdir()) == [], f"left in the work dir: {list(work.iterdir())}"
    leaked = {d for d in domains() - domains_before if name in d}
    assert not leaked, f"libvirt domains left: {leaked}"
    assert qemu_processes(work) == [], f"qemu left running: {qemu_processes(work)}"
    port = forwarded_port(stderr)
    assert port is None or port_closed(port), f"port {port} still forwarded"

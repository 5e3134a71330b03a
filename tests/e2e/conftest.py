"""Fixtures for the end-to-end tests: real baker builds under libvirt/qemu (TCG here)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from bakerun import BAKER, Baked, run_baker


@pytest.fixture(scope="session")
def work_root() -> Path:
    # Not under /tmp/pytest-of-root (0700): libvirt's qemu user must reach the overlays.
    path = Path(tempfile.mkdtemp(prefix="baker-e2e-", dir="/var/tmp"))
    path.chmod(0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def out_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("out")


@pytest.fixture(scope="session")
def signing_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    keys = tmp_path_factory.mktemp("keys")
    proc = subprocess.run([str(BAKER), "keygen", str(keys)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return keys / "baker.key"


def _bake(recipe: str, out: Path, work: Path, key: Path) -> Baked:
    proc = run_baker("build", recipe, "--out", out, "--sign-key", key, work=work)
    assert proc.returncode == 0, f"baker build {recipe} failed:\n{proc.stderr[-4000:]}"
    name = Path(recipe).stem
    return Baked(out / name, proc.stdout.strip().splitlines()[-1], proc.stdout, proc.stderr)


@pytest.fixture(scope="session")
def base_image(out_root: Path, work_root: Path, signing_key: Path) -> Baked:
    return _bake("images/debian-12-base.yaml", out_root, work_root, signing_key)


@pytest.fixture(scope="session")
def web_image(out_root: Path, work_root: Path, signing_key: Path) -> Baked:
    return _bake("images/debian-12-web.yaml", out_root, work_root, signing_key)

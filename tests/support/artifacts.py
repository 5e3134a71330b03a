"""A small real artifact for the tests of what reads artifacts (convert, export, import): a
tiny qcow2 with a few MiB of data, a project with a recipe, its lock and pinned files, and
the artifact `baker build` would publish around the image, signed and locked on request."""

from __future__ import annotations

import hashlib
import io
import random
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from baker.artifact import dump_json, sha256sums
from baker.build.steps import attest
from baker.cache import Cache
from baker.evidence import signing
from baker.evidence.sbom import Lineage
from baker.hashing import sha256_file
from baker.image import disk
from baker.image.packages import Package
from baker.progress import Reporter
from baker.recipe.lock import Lock, LockedPackage

SDE = 1686355200  # 2023-06-10
SIZE_MIB = 32
NAME = "tiny"
BAKER = Path(sys.executable).parent / "baker"
PACKAGES = [Package(f"pkg{i}", "1.0", "amd64", f"pkg{i}", "1.0") for i in range(3)]
RECIPE = """\
name: tiny
backend:
  memory_mib: 768
  cpus: 3
provisioners:
  - name: hello
    shell: ../provisioners/hello.sh
    sha256: {hello}
  - name: page
    file: ../provisioners/files/page.html
    sha256: {page}
    dest: /var/www/page.html
tests:
  - path: testinfra/test_tiny.py
    sha256: {test}
"""


def _run(*argv: str | Path, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, **kwargs)


def quiet() -> Reporter:
    return Reporter(Console(file=io.StringIO(), width=100))


def make_image(work: Path, files: dict[str, bytes] | None = None) -> Path:
    """A small bootable-layout qcow2 holding a few MiB of incompressible data (and `files`,
    by their paths in the tree)."""
    tree = work / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc" / "hostname").write_text("tiny\n")
    (tree / "srv").mkdir()
    (tree / "srv" / "data.bin").write_bytes(random.Random(6).randbytes(3 << 20))
    for rel, data in (files or {}).items():
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_bytes(data)
    tar, raw, qcow2 = work / "root.tar", work / "disk.raw", work / "image.qcow2"
    _run("tar", "--format=pax", "--sort=name", "--numeric-owner", "--owner=0", "--group=0",
         f"--mtime=@{SDE}", "-C", tree, "-cf", tar, ".", check=True)  # fmt: skip
    disk.assemble(tar, raw, SIZE_MIB, disk.DiskIds.derive("convert-test"), SDE)
    disk.to_qcow2(raw, qcow2)
    raw.unlink()
    return qcow2


def make_project(root: Path, cache: Cache) -> dict[str, Any]:
    """A recipe with a lock, pinned files and three fake locked packages in `cache`, laid out as
    the repository is (images/ beside provisioners/); returns the build record's pins."""
    files = {
        "provisioners/hello.sh": b"#!/bin/sh\necho hello\n",
        "provisioners/files/page.html": b"<p>tiny</p>\n",
        "images/testinfra/test_tiny.py": b"def test_nothing(host):\n    pass\n",
    }
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    sha = {k: hashlib.sha256(v).hexdigest() for k, v in files.items()}
    recipe = root / "images" / f"{NAME}.yaml"
    recipe.write_text(
        RECIPE.format(
            hello=sha["provisioners/hello.sh"],
            page=sha["provisioners/files/page.html"],
            test=sha["images/testinfra/test_tiny.py"],
        )
    )
    locked = []
    for p in PACKAGES:
        deb = root / f"{p.name}.deb"
        deb.write_bytes(f"!<arch>\nfake package {p.name}\n".encode())
        digest = sha256_file(deb)
        cache.put_deb(deb, digest)
        path = f"pool/main/p/{p.name}/{p.name}_1.0_amd64.deb"
        locked.append(LockedPackage(p.name, "1.0", "amd64", "debian", path, digest, 30))
    lock = Lock("bookworm", "amd64", ("pkg0",), "2023-06-10T00:00:00+00:00", tuple(locked))
    recipe.with_suffix(".lock").write_text(lock.dump())
    return {
        "recipe": recipe,
        "lock": {"file": str(recipe.with_suffix(".lock")), "digest": lock.digest,
                 "resolved": lock.resolved},
        "debs": {p.name: f"sha256:{p.sha256}" for p in locked},
        "files": {
            "../provisioners/hello.sh": f"sha256:{sha['provisioners/hello.sh']}",
            "../provisioners/files/page.html": f"sha256:{sha['provisioners/files/page.html']}",
            "testinfra/test_tiny.py": f"sha256:{sha['images/testinfra/test_tiny.py']}",
        },
    }  # fmt: skip


def make_artifact(
    directory: Path,
    qcow2: Path,
    key: Path | None = None,
    project: dict[str, Any] | None = None,
    parent: dict[str, Any] | None = None,
    name: str = NAME,
    finished: str = "2023-06-10T00:01:00+00:00",
) -> Path:
    """A complete artifact as `baker build` publishes it (`baker verify` passes), around a
    given qcow2; signed with `key`, locked with `project`'s pins, a child of `parent` (its
    build.json `parent` record, the parent having had pkg0 and pkg1); named `name` and
    finished at `finished`."""
    directory.mkdir(parents=True)
    shutil.copyfile(qcow2, directory / "image.qcow2")
    digest = f"sha256:{sha256_file(directory / 'image.qcow2')}"
    recipe = project["recipe"] if project else directory.parent / "no-such-recipe.yaml"
    record = {
        "baker_version": "test",
        "recipe": {"name": name, "file": str(recipe), "root": "..",
                   "digest": f"sha256:{sha256_file(recipe)}" if project else "sha256:" + "0" * 64},
        "variables": {},
        "source_date_epoch": SDE,
        "pins": {
            "lock": project["lock"] if project else None,
            "debs": project["debs"] if project else {},
            "files": project["files"] if project else {},
            "base": {"suite": "bookworm", "arch": "amd64", "packages": ["pkg0"], "sources": []},
            "base_digest": "sha256:" + "1" * 64,
            "packages": {p.name: p.version for p in PACKAGES},
        },
        "steps": {"base": {"key": "2" * 64}},
        "accel": "tcg",
        "tools": {"qemu-img": "test"},
        "started": "2023-06-10T00:00:00+00:00",
        "finished": finished,
        "image": {"file": "image.qcow2", "digest": digest, "format": "qcow2"},
    }  # fmt: skip
    lineage = None
    if parent:
        record["parent"] = parent
        lineage = Lineage(parent["name"], parent["digest"], {"pkg0": "1.0", "pkg1": "1.0"})
    (directory / "build.json").write_bytes(dump_json(record))
    boot = {"image": digest, "accel": "tcg", "time_to_ssh_s": 14.0, "runs": 1,
            "each_run": [{"time_to_ssh_s": 14.0}]}  # fmt: skip
    (directory / "boot.json").write_bytes(dump_json(boot))
    (directory / "verify.junit.xml").write_text("<testsuites/>\n")
    attest.write(
        directory,
        image=directory / "image.qcow2",
        record=record,
        packages=PACKAGES,
        copyrights={},
        invocation_id="00000000-0000-4000-8000-000000000000",
        key=signing.load_private_key(key) if key else None,
        distro="debian-12",
        parent=lineage,
    )
    (directory / "SHA256SUMS").write_text(sha256sums(directory))
    return directory


@pytest.fixture(scope="session", name="image")
def image_fixture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_image(tmp_path_factory.mktemp("image"))


@pytest.fixture(scope="session", name="keypair")
def keypair_fixture(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return signing.keygen(tmp_path_factory.mktemp("keys"))

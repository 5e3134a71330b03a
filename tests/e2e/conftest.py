"""Fixtures for the end-to-end tests: real baker builds under libvirt/qemu (TCG here)."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import sharing, vulndb_files
from support.bakerun import BAKER, OFFLINE, ROOT, AirGap, Baked, baker, run_baker


@pytest.fixture(scope="session", autouse=True)
def session_cache() -> Iterator[Path]:
    """The session's own step cache: every e2e build shares it (the base and disk are made
    once), and none reuses what an earlier session left in the machine's cache."""
    path = sharing.directory("cache", 0o755)
    before = os.environ.get("BAKER_CACHE_DIR")
    os.environ["BAKER_CACHE_DIR"] = str(path)
    yield path
    if before is None:
        del os.environ["BAKER_CACHE_DIR"]
    else:
        os.environ["BAKER_CACHE_DIR"] = before


@pytest.fixture(scope="session")
def work_root() -> Path:
    return sharing.directory("work")


@pytest.fixture(scope="session")
def out_root() -> Path:
    return sharing.directory("out")


@pytest.fixture(scope="session")
def signing_key() -> Path:
    def keygen() -> Path:
        keys = sharing.directory("keys", 0o700)
        proc = subprocess.run([str(BAKER), "keygen", str(keys)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        return keys / "baker.key"

    return sharing.once("signing_key", keygen)


def _bake(recipe: str, out: Path, work: Path, key: Path, *options: str) -> Baked:
    """The shipped recipe built once for the session, by whichever worker needs it first."""
    return sharing.once(Path(recipe).stem, lambda: _build(recipe, out, work, key, options))


def _build(recipe: str, out: Path, work: Path, key: Path, options: tuple[str, ...]) -> Baked:
    proc = run_baker("build", recipe, "--out", out, "--sign-key", key, *options, work=work)
    assert proc.returncode == 0, f"baker build {recipe} failed:\n{proc.stderr[-4000:]}"
    name = Path(recipe).stem
    return Baked(out / name, proc.stdout.strip().splitlines()[-1], proc.stdout, proc.stderr)


@pytest.fixture(scope="session")
def vuln_db() -> Path:
    """The snapshot the session's base is scanned against (tests/support/vulndb_files.py)."""
    where = sharing.directory("vulndb") / "debian-tracker.json"
    return sharing.once("vuln_db", lambda: vulndb_files.tracker(where))


# The base is scanned (report only): its report is checked, pushed and pulled with it.
@pytest.fixture(scope="session")
def base_image(out_root: Path, work_root: Path, signing_key: Path, vuln_db: Path) -> Baked:
    return _bake("images/debian-12-base.yaml", out_root, work_root, signing_key,
                 f"--vuln-db={vuln_db}")  # fmt: skip


# The other shipped recipes are measured once per firmware: a measured boot under emulation
# costs a minute, and the base shows the recipe's own count.
@pytest.fixture(scope="session")
def trixie_image(out_root: Path, work_root: Path, signing_key: Path) -> Baked:
    return _bake("images/debian-13-base.yaml", out_root, work_root, signing_key, "--boot-runs=1")


# The web image is the project's locked build (`first_build`): one build of the web recipe
# serves the tests of a shipped recipe's artifact and those of the lock and the air gap.
@pytest.fixture(scope="session")
def web_image(first_build: Baked) -> Baked:
    return first_build


@pytest.fixture(scope="session")
def project(work_root: Path) -> dict[str, Path]:
    return sharing.once("project", lambda: _project(work_root))


def _project(work_root: Path) -> dict[str, Path]:
    """A copy of the web recipe and what it references, so its lock lands beside it."""
    root = sharing.directory("project")
    # A repository of its own, as a team's is: its root is the recipe's project root.
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    shutil.copytree(ROOT / "provisioners", root / "provisioners")
    (root / "images").mkdir()
    shutil.copytree(ROOT / "images" / "testinfra", root / "images" / "testinfra")
    recipe = root / "images" / "debian-12-web.yaml"
    # BIOS only and one measured boot: the base shows a hybrid image measured under each
    # firmware, three times under UEFI; a boot under emulation costs most of a minute.
    shipped = (ROOT / "images" / "debian-12-web.yaml").read_text()
    recipe.write_text(shipped.replace("base:\n", "base:\n  boot: bios\n", 1) + "boot_runs: 1\n")
    dirs = {"root": root, "recipe": recipe}
    for name in ("cache_a", "out_a", "out_b"):
        dirs[name] = root / name
    for name in ("work_a", "work_b"):
        dirs[name] = work_root / f"repro-{name}"
        dirs[name].mkdir(mode=0o711)
    return dirs


@pytest.fixture(scope="session")
def first_build(project: dict[str, Path], signing_key: Path) -> Baked:
    return sharing.once("first_build", lambda: _first_build(project, signing_key))


def _first_build(p: dict[str, Path], key: Path) -> Baked:
    locked = baker("lock", p["recipe"], cache=p["cache_a"], work=p["work_a"])
    assert "packages, resolved" in locked.stdout
    lock_text = p["recipe"].with_suffix(".lock").read_text()
    assert "nginx" in lock_text and "deb.debian.org" not in lock_text
    built = baker("build", p["recipe"], "--out", p["out_a"], "--sign-key", key,
                  cache=p["cache_a"], work=p["work_a"])  # fmt: skip
    name = "debian-12-web"
    return Baked(p["out_a"] / name, built.stdout.split()[-1], built.stdout, built.stderr)


@pytest.fixture(scope="session")
def airgap(project: dict[str, Path], first_build: Baked, signing_key: Path) -> AirGap:
    pub = signing_key.with_name("baker.pub")
    return sharing.once("airgap", lambda: _airgap(project, first_build, pub))


def _airgap(p: dict[str, Path], first_build: Baked, pub: Path) -> AirGap:
    """The second build of the locked recipe: in another work directory, a minute or more
    after the first, from a fresh step cache holding only the imported package files, with
    the mirror unreachable."""
    started = dt.datetime.fromisoformat(
        json.loads((first_build.artifact / "build.json").read_text())["started"]
    )
    root = sharing.directory("airgap")
    # A copy: converting writes into the artifact, and other tests read the original.
    artifact = root / "exported" / first_build.artifact.name
    shutil.copytree(first_build.artifact, artifact)
    bundle = root / "web.tar"
    exported = baker("export", artifact, "--to", bundle, "--format", "raw,vmdk,vhdx,vhd,ova",
                     "--with-sources", "--pub", pub, cache=p["cache_a"],
                     work=p["work_a"])  # fmt: skip
    into, cache = root / "imported", root / "airgap-cache"
    imported = baker("import", bundle, "--into", into, "--pub", pub, cache=cache,
                     work=p["work_b"], env=OFFLINE)  # fmt: skip
    recipe = into / "sources" / "images" / "debian-12-web.yaml"
    time.sleep(max(0.0, 60 - (dt.datetime.now(dt.UTC) - started).total_seconds()))
    rebuilt = baker("rebuild", "--check", into, "--recipe", recipe, "--keep", p["out_b"],
                    cache=cache, work=p["work_b"], env=OFFLINE, check=False)  # fmt: skip
    return AirGap(bundle, exported, into, imported, cache, rebuilt,
                  p["out_b"] / "debian-12-web")  # fmt: skip


@pytest.fixture(scope="session")
def two_builds(first_build: Baked, airgap: AirGap) -> tuple[Baked, Baked]:
    """The locked recipe built, and built again across the air gap."""
    rebuilt = airgap.rebuilt
    assert rebuilt.returncode == 0, rebuilt.stdout[-2000:] + rebuilt.stderr[-3000:]
    assert "mmdebstrap" in rebuilt.stderr  # the base really was built again
    second = Baked(airgap.artifact, rebuilt.stdout.split()[-1], rebuilt.stdout, rebuilt.stderr)
    return first_build, second
